"""Training the Stage 1 LSTM in PyTorch: the Keras network of `lstm.build_model`, mirrored, to train it faster.

Keras 3 runs a masked LSTM on the CPU as a loop of small ops per step (the TensorFlow backend's while loop, the torch
backend's Python loop) and recomputes each step's input product. `TorchMirror` holds the Keras model's parameters,
copied from it before training and back after each epoch: the same gates (i, f, c, o), kernels in Keras's layout,
the catalogue's title and genre tables, dropout after each LSTM, softmax cross-entropy, Adam with Keras's epsilon.
Its LSTM layers run a hand-written step loop (`LstmSequence`) whose input products are done once for all steps (the
first layer's once per movie), and masking is exact for left-padded histories (the state stays zero until the first
real step, as under Keras's mask). The saved model stays the Keras model, so `load_lstm` and its readers are
unchanged. The LSTM equations follow Hochreiter & Schmidhuber (1997) with the forget gate of Gers et al. (2000) as
Keras's `LSTMCell` implements them (keras/src/layers/rnn/lstm.py, keras 3.15.1).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import keras
import numpy as np
import torch
from torch import nn

from dualrec.config import LSTMConfig
from dualrec.data.dataset import PAD_ITEM, Windows
from dualrec.data.titles import PAD_TOKEN

KERAS_ADAM_EPSILON = 1e-7  # keras.optimizers.Adam's default (torch's is 1e-8)
EVAL_BATCH = 256  # validation windows per product: 2,140 per CPU-second against 1,600 at 1024 (cache-sized)
LATER_PARAMETERS = ("lstm_1.recurrent_kernel", "lstm_2.", "hidden.", "next_item.")  # those not behind the input table
T = TypeVar("T")


def _parameter(values: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.tensor(np.asarray(values), dtype=torch.float32))


class LstmSequence(torch.autograd.Function):
    """One LSTM layer over every step, Keras's LSTMCell (gates i, f, c, o; sigmoid and tanh) with a hand-written
    backward: the recurrent products step by step, the kernel's gradient as one product over all steps.

    zx (T, B, 4U) is the input projection plus bias, w_hh (U, 4U) the recurrent kernel, keep (T, B, 1) 0 at the
    padded steps of left-padded histories (None: no padding); the state stays zero there, as under Keras's mask.
    """

    @staticmethod
    def forward(ctx, zx: torch.Tensor, w_hh: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        steps, batch, units = zx.shape[0], zx.shape[1], w_hh.shape[0]
        gates = torch.empty_like(zx)
        cells, tanhs, outputs = (zx.new_empty(steps, batch, units) for _ in range(3))
        h, c = zx.new_zeros(batch, units), zx.new_zeros(batch, units)
        for t in range(steps):
            z = torch.addmm(zx[t], h, w_hh, out=gates[t])
            z[:, : 2 * units].sigmoid_()
            z[:, 2 * units : 3 * units].tanh_()
            z[:, 3 * units :].sigmoid_()
            i, f, g, o = z.split(units, 1)
            c = torch.addcmul(f * c, i, g, out=cells[t])
            if keep is not None:
                c.mul_(keep[t])
            h = torch.mul(o, torch.tanh(c, out=tanhs[t]), out=outputs[t])
        ctx.save_for_backward(w_hh, keep, gates, cells, tanhs, outputs)
        return outputs

    @staticmethod
    def backward(ctx, d_outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        w_hh, keep, gates, cells, tanhs, outputs = ctx.saved_tensors
        steps, batch, units = outputs.shape
        d_z = torch.empty_like(gates)
        dh, dc, zero = (d_outputs.new_zeros(batch, units) for _ in range(3))
        for t in reversed(range(steps)):
            i, f, g, o = gates[t].split(units, 1)
            di, df, dg, do = d_z[t].split(units, 1)
            dh.add_(d_outputs[t])
            torch.mul(dh, tanhs[t], out=do)
            dc.add_(torch.mul(tanhs[t], tanhs[t]).neg_().add_(1).mul_(o).mul_(dh))
            if keep is not None:
                dc.mul_(keep[t])
            torch.mul(dc, g, out=di).mul_(i).mul_(1 - i)
            torch.mul(dc, cells[t - 1] if t else zero, out=df).mul_(f).mul_(1 - f)
            torch.mul(g, g, out=dg).neg_().add_(1).mul_(i).mul_(dc)
            do.mul_(o).mul_(1 - o)
            dc.mul_(f)
            torch.mm(d_z[t], w_hh.T, out=dh)
        previous = torch.cat([outputs.new_zeros(1, batch, units), outputs[:-1]]).reshape(-1, units)
        return d_z, previous.T @ d_z.reshape(-1, 4 * units), None


class _Lstm(nn.Module):
    """One Keras LSTM layer's kernel (in, 4U), recurrent kernel (U, 4U) and bias (4U,), in Keras's layout."""

    def __init__(self, layer: keras.layers.LSTM):
        super().__init__()
        self.kernel, self.recurrent_kernel, self.bias = (_parameter(w) for w in layer.get_weights())

    def forward(self, zx: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """(T, B, U) outputs from the input projection zx (T, B, 4U), bias included."""
        return LstmSequence.apply(zx, self.recurrent_kernel, keep)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) @ kernel + bias."""
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.kernel).reshape(*x.shape[:-1], -1)

    def keras_weights(self) -> list[np.ndarray]:
        return [w.detach().numpy() for w in (self.kernel, self.recurrent_kernel, self.bias)]


class _Dense(nn.Module):
    def __init__(self, layer: keras.layers.Dense):
        super().__init__()
        self.kernel, self.bias = (_parameter(w) for w in layer.get_weights())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.kernel)

    def keras_weights(self) -> list[np.ndarray]:
        return [self.kernel.detach().numpy(), self.bias.detach().numpy()]


class TorchMirror(nn.Module):
    """The Keras LSTM model's network in torch, initialised from its weights; `copy_to` writes them back.

    The first LSTM's input at each step is a function of the movie alone, so its projection is computed once per
    batch for the whole catalogue, (C, in) @ (in, 4U), and looked up per step: the same products, about a third fewer
    multiply-adds per window.
    """

    def __init__(self, model: keras.Model):
        super().__init__()
        steps = model.get_layer("step_features")
        self.item_embedding = _parameter(steps.item_embedding.get_weights()[0])
        self.title_embedding = _parameter(steps.title_embedding.get_weights()[0])
        self.register_buffer("title_table", torch.tensor(steps.title_table.numpy(), dtype=torch.long), persistent=False)
        self.register_buffer("genre_table", torch.tensor(steps.genre_table.numpy()), persistent=False)
        names = {layer.name for layer in model.layers}
        self.genre_dense = _Dense(steps.genre_dense) if steps.genre_dense is not None else None
        self.lstm_1, self.lstm_2 = _Lstm(model.get_layer("lstm_1")), _Lstm(model.get_layer("lstm_2"))
        self.rate = model.get_layer("dropout_1").rate  # dropout_2's too
        self.hidden = _Dense(model.get_layer("hidden")) if "hidden" in names else None
        self.next_item = _Dense(model.get_layer("next_item"))

    def step_table(self) -> torch.Tensor:
        """(C, item_dim + title_dim + genre features): what StepFeatures gives each movie at a step."""
        real = (self.title_table != PAD_TOKEN).float()[..., None]
        titles = (nn.functional.embedding(self.title_table, self.title_embedding) * real).sum(1) / real.sum(1).clamp(min=1.0)
        genres = self.genre_table if self.genre_dense is None else torch.relu(self.genre_dense(self.genre_table))
        return torch.cat([self.item_embedding, titles, genres], dim=-1)

    def input_table(self) -> torch.Tensor:
        """(C, 4U): each movie's input product in the first LSTM, bias included."""
        return self.lstm_1.project(self.step_table())

    def logits(self, table: torch.Tensor, items: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, steps) left-padded item ids -> (n, C) logits (the Keras model's softmax input), from `input_table()`;
        dropout drawn from `generator` (training), none without one."""
        steps = items.T
        keep = (steps != PAD_ITEM).float()[..., None] if bool((steps == PAD_ITEM).any()) else None
        x = self.lstm_1(nn.functional.embedding(steps.clamp(min=0), table), keep)
        x = self.lstm_2(self.lstm_2.project(self._dropout(x, generator)), keep)[-1]
        x = self._dropout(x, generator)
        if self.hidden is not None:
            x = torch.relu(self.hidden(x))
        return self.next_item(x)

    def forward(self, items: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.logits(self.input_table(), items, generator)

    def _dropout(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None or not self.rate:
            return x
        return x * torch.empty_like(x).bernoulli_(1 - self.rate, generator=generator).div_(1 - self.rate)

    def copy_to(self, model: keras.Model) -> None:
        """Write these weights into the Keras model (its non-trainable tables are left as they are)."""
        steps = model.get_layer("step_features")
        steps.item_embedding.set_weights([self.item_embedding.detach().numpy()])
        steps.title_embedding.set_weights([self.title_embedding.detach().numpy()])
        if self.genre_dense is not None:
            steps.genre_dense.set_weights(self.genre_dense.keras_weights())
        layers = {"lstm_1": self.lstm_1, "lstm_2": self.lstm_2, "next_item": self.next_item, "hidden": self.hidden}
        for name, layer in layers.items():
            if layer is not None:
                model.get_layer(name).set_weights(layer.keras_weights())


@dataclass
class EpochStats:
    """Sums over one pass: loss, top-5 hits and windows."""

    loss: float = 0.0
    hits: float = 0.0
    count: int = 0

    def add(self, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        self.loss += float(loss) * len(targets)
        self.hits += float((logits.topk(5, dim=1).indices == targets[:, None]).any(1).sum())
        self.count += len(targets)

    def merge(self, other: EpochStats) -> EpochStats:
        return EpochStats(self.loss + other.loss, self.hits + other.hits, self.count + other.count)

    def logs(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}loss": self.loss / self.count, f"{prefix}hr@5": self.hits / self.count}


class ShardedStep:
    """Training steps with each batch cut into one shard per thread, each shard's forward and backward on its own thread
    (torch at one thread each) with its own dropout generator: two cores stay busy on a machine shared with other
    work, where torch's own threads wait for each other at every small product. The first LSTM's input table is
    computed once per batch and its gradient summed over the shards, as are the others; the sum is the batch's
    gradient, so the step is a plain Adam step whatever the number of threads (dropout aside)."""

    def __init__(self, net: TorchMirror, threads: int, seed: int):
        self.net, self.threads = net, threads
        self.later = [p for name, p in net.named_parameters() if name.startswith(LATER_PARAMETERS)]
        self.generators = [torch.Generator().manual_seed(seed + shard) for shard in range(threads)]
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="lstm-shard") if threads > 1 else None

    def map(self, work: Callable[[int], T], count: int) -> list[T]:
        return list(self.pool.map(work, range(count))) if self.pool else [work(i) for i in range(count)]

    def gradients(self, items: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Set every parameter's .grad to the mean loss's gradient over the batch; its logits and mean loss."""
        table = self.net.input_table()
        shared = table.detach().requires_grad_()
        shards = torch.arange(len(items)).tensor_split(min(self.threads, len(items)))

        def work(shard: int) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
            rows = shards[shard]
            logits = self.net.logits(shared, items[rows], self.generators[shard])
            loss = nn.functional.cross_entropy(logits, targets[rows], reduction="sum") / len(items)
            return logits.detach(), loss.detach(), torch.autograd.grad(loss, [shared, *self.later])

        results = self.map(work, len(shards))
        table_gradient, *later = (functools.reduce(torch.add, parts) for parts in zip(*(r[2] for r in results)))
        for parameter in self.net.parameters():
            parameter.grad = None
        table.backward(table_gradient)
        for parameter, gradient in zip(self.later, later):
            parameter.grad = gradient
        return torch.cat([r[0] for r in results]), sum(r[1] for r in results)

    def evaluate(self, windows: Windows) -> dict[str, float]:
        """Validation loss and top-5 accuracy over `windows` (no dropout), batches spread over the threads."""
        with torch.no_grad():
            table = self.net.input_table()

        def work(batch: int) -> EpochStats:
            rows = slice(batch * EVAL_BATCH, (batch + 1) * EVAL_BATCH)
            items, targets = torch.from_numpy(windows.histories[rows]).long(), torch.from_numpy(windows.targets[rows]).long()
            with torch.no_grad():
                logits = self.net.logits(table, items)
                stats = EpochStats()
                stats.add(logits, targets, nn.functional.cross_entropy(logits, targets))
            return stats

        return functools.reduce(EpochStats.merge, self.map(work, -(-len(windows) // EVAL_BATCH))).logs("val_")


def fit(model: keras.Model, train: Windows, val: Windows, config: LSTMConfig, callbacks: keras.callbacks.CallbackList) -> int:
    """Train the Keras `model` on `train` as `model.fit` would: at most `config.epochs` epochs of `config.batch_size`
    windows reshuffled each epoch by a seeded generator (as `lstm.WindowBatches`), the validation loss and hr@5 after
    each, the weights copied into `model` before `callbacks` see the epoch's end (so early stopping keeps and restores
    them), until a callback sets `model.stop_training`. It uses as many threads as torch would (`torch.get_num_threads`,
    which OMP_NUM_THREADS sets), one batch shard each, and returns that number."""
    threads = torch.get_num_threads()
    net = TorchMirror(model)
    step = ShardedStep(net, threads, config.seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate, eps=KERAS_ADAM_EPSILON)
    rng = np.random.default_rng(config.seed)
    histories, targets = torch.from_numpy(train.histories).long(), torch.from_numpy(train.targets).long()
    model.stop_training = False
    torch.set_num_threads(1)
    try:
        callbacks.on_train_begin()
        for epoch in range(config.epochs):
            callbacks.on_epoch_begin(epoch)
            stats, order = EpochStats(), torch.from_numpy(rng.permutation(len(train)))
            for batch, start in enumerate(range(0, len(train), config.batch_size)):
                callbacks.on_train_batch_begin(batch)
                rows = order[start : start + config.batch_size]
                logits, loss = step.gradients(histories[rows], targets[rows])
                optimizer.step()
                stats.add(logits, targets[rows], loss)
                callbacks.on_train_batch_end(batch, stats.logs())
            logs = stats.logs() | step.evaluate(val)
            net.copy_to(model)
            callbacks.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        callbacks.on_train_end()
    finally:
        torch.set_num_threads(threads)
        if step.pool:
            step.pool.shutdown()
    return threads
