"""Grounded answers: a model may write only whole lines chosen from a fixed set, each choice at most once.

An `AnswerConstraint` says what an engine needs to ground an answer of K lines `<head><choice><suffix>`: the heads
("1.", "\\n2.", ...) and suffixes (a movie's genres) are written by us, never by the model; the model picks each
choice (" Toy Story (1995)") among those still allowed. A line removes its choice from the next ones, so K lines
are K distinct choices. The choices are merged on their shared prefixes in a `PrefixTree` built once per choice set
(it does not depend on what a request excludes); engines read it as GBNF text (servers, one line at a time) or as a
tree over their tokenizer's tokens (`TokenTrees`) that a `TokenWalker` walks token by token (transformers, llama.cpp).
Nothing here knows about movies: dualrec.grounding.grounded builds the constraint from the catalogue and a history.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from dualrec.llm.errors import LLMError

LINE_START = "{rank}."  # written before each choice; lines after the first start on a new line


class GroundingError(LLMError):
    """A grounded answer cannot be written: nothing is left to choose, or the engine rejected the constraint."""


class GroundingUnsupportedError(GroundingError):
    """The engine or server cannot, or did not, constrain its answer: what it writes would not be grounded."""


@dataclass(frozen=True)
class Choice:
    """One answer line's free part and what follows it."""

    text: str  # what the model writes, its leading space included: " Toy Story (1995)"
    suffix: str = ""  # written by us right after it: " Genres: Animation, Children's, Comedy"


class PrefixTree:
    """Sequences (strings, or token-id tuples) merged on their shared prefixes: a radix tree over them, sorted.

    Node 0 is the root. Each node has a `label` (the symbols on the edge into it), `children` (first symbol of the
    child's label -> child), `end` (the sequence that ends at it, or -1) and, because the sequences are sorted, the
    sequences below it as the contiguous range `lo:hi` of `order` (sorted position -> sequence index).
    """

    def __init__(self, sequences: Sequence[Sequence]) -> None:
        if not sequences:
            raise GroundingError("a prefix tree needs at least one sequence")
        self.sequences = sequences
        self.order = sorted(range(len(sequences)), key=lambda index: sequences[index])
        self.labels: list[Sequence] = []
        self.children: list[dict] = []
        self.end: list[int] = []
        self.lo: list[int] = []
        self.hi: list[int] = []
        self._add(0, len(sequences), 0)

    def _add(self, lo: int, hi: int, depth: int) -> int:
        """Add the node of sorted sequences lo:hi, which share their first `depth` symbols; return its id."""
        first, last = self.sequences[self.order[lo]], self.sequences[self.order[hi - 1]]
        if first == last and lo + 1 < hi:
            raise GroundingError(f"the same choice is listed twice: {first!r}")
        stop = depth
        while stop < min(len(first), len(last)) and first[stop] == last[stop]:
            stop += 1
        node = len(self.labels)
        self.labels.append(first[depth:stop])
        self.children.append({})
        self.end.append(-1)
        self.lo.append(lo)
        self.hi.append(hi)
        start = lo
        if len(first) == stop:  # sorted: the sequence that is the shared prefix itself comes first
            self.end[node] = self.order[lo]
            start += 1
        while start < hi:
            symbol, after = self.sequences[self.order[start]][stop], start + 1
            while after < hi and self.sequences[self.order[after]][stop] == symbol:
                after += 1
            self.children[node][symbol] = self._add(start, after, stop)
            start = after
        return node

    def __len__(self) -> int:
        return len(self.labels)

    def alive(self, excluded: Collection[int]) -> Callable[[int], bool]:
        """A test of whether a node still leads to a sequence outside `excluded` (sequence indices)."""
        mask = np.zeros(len(self.sequences), dtype=np.int32)
        mask[list(excluded)] = 1
        counts = np.concatenate([[0], np.cumsum(mask[self.order])]).tolist()
        return lambda node: self.hi[node] - self.lo[node] > counts[self.hi[node]] - counts[self.lo[node]]

    def gbnf(self, excluded: Collection[int] = ()) -> str:
        """A GBNF grammar (llama.cpp's format, also vLLM's through xgrammar) whose `root` matches exactly the
        string sequences outside `excluded`, built on the tree so shared prefixes are written once."""
        alive = self.alive(excluded)
        if not alive(0):
            raise GroundingError("every choice is excluded: nothing is left to write")
        return f"root ::= {self._expression(0, alive, set(excluded))}\n"

    def _expression(self, node: int, alive: Callable[[int], bool], excluded: set[int]) -> str:
        parts = [gbnf_literal(self.labels[node])] if self.labels[node] else []
        branches = [self._expression(child, alive, excluded) for child in self.children[node].values() if alive(child)]
        ends_here = self.end[node] >= 0 and self.end[node] not in excluded
        if len(branches) == 1 and not ends_here:
            parts.append(branches[0])
        elif branches:
            parts.append(f"({' | '.join(branches)}){'?' if ends_here else ''}")
        return " ".join(parts) or '""'


def gbnf_literal(text: str) -> str:
    """A GBNF string literal (UTF-8 kept as it is; quotes, backslashes and control characters escaped)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


class ChoiceSet:
    """The choices an answer can draw from and their prefix tree: built once, shared by every request."""

    def __init__(self, choices: Sequence[Choice]) -> None:
        self.choices = tuple(choices)
        self.tree = PrefixTree([choice.text for choice in self.choices])
        self.index = {choice.text.strip(): position for position, choice in enumerate(self.choices)}
        if len(self.index) < len(self.choices):
            raise GroundingError("two choices differ only in their outer spaces")

    def __len__(self) -> int:
        return len(self.choices)


@dataclass(frozen=True, eq=False)
class AnswerConstraint:
    """A request for a grounded answer: `lines` lines from `choices`, none of `excluded` (choice positions)."""

    choices: ChoiceSet
    k: int
    excluded: frozenset[int] = frozenset()
    line_start: str = LINE_START

    def __post_init__(self) -> None:
        if self.k < 1:
            raise GroundingError(f"a grounded answer needs at least one line, not {self.k}")
        if self.available == 0:
            raise GroundingError("every choice is excluded: a grounded answer has nothing left to write")

    @property
    def available(self) -> int:
        return len(self.choices) - len(self.excluded)

    @property
    def lines(self) -> int:
        """K, or fewer when fewer choices are left."""
        return min(self.k, self.available)

    def head(self, rank: int) -> str:
        """What precedes line `rank`'s choice: its number, after a line break from the second line on."""
        return ("\n" if rank > 1 else "") + self.line_start.format(rank=rank)

    def allowed(self, text: str, used: Collection[int]) -> int | None:
        """The position of the choice `text` (compared without outer spaces) when it may be written now, else None."""
        position = self.choices.index.get(text.strip())
        return None if position is None or position in self.excluded or position in used else position

    def gbnf(self, used: Collection[int] = ()) -> str:
        """The grammar of one line's choice among those neither excluded nor `used`."""
        return self.choices.tree.gbnf(self.excluded | set(used))

    def longest_choice_bytes(self) -> int:
        return max(len(choice.text.encode()) for choice in self.choices.choices)

    def token_budget(self) -> int:
        """An upper bound on the tokens of the whole answer (the end included): no token is shorter than a byte."""
        longest = max(len((choice.text + choice.suffix).encode()) for choice in self.choices.choices)
        return self.lines * (longest + len(self.head(self.lines).encode())) + 1


def write_lines(
    constraint: AnswerConstraint, decode_line: Callable[[str, frozenset[int]], Iterator[str]], stop: threading.Event
) -> Iterator[str]:
    """A grounded answer from an engine that decodes one choice at a time; yields its chunks until done or `stop`.

    `decode_line(answer_so_far, used)` yields the chunks of one choice among those not excluded nor `used`, continuing
    the answer so far (which ends with the line's head). Whatever it writes must be such a choice, or GroundingError.
    A line's head is yielded with its first chunk, so an engine that fails on its first line has yielded nothing.
    """
    used: set[int] = set()
    answer = ""
    for rank in range(1, constraint.lines + 1):
        head = constraint.head(rank)
        answer += head
        written, pending = "", head  # the head goes out with the line's first chunk, once something is decoded
        for chunk in decode_line(answer, frozenset(used)):
            yield pending + chunk
            written, pending = written + chunk, ""
        if stop.is_set():
            return
        position = constraint.allowed(written, used)
        if position is None:
            raise GroundingError(f"line {rank} is {written.strip()!r}, which is not an allowed choice")
        used.add(position)
        suffix = constraint.choices.choices[position].suffix
        answer += written + suffix
        if suffix:
            yield suffix


class TokenTrees:
    """The choices' prefix trees over one tokenizer's tokens, each built once per choice set (and kept while it lives)."""

    def __init__(self, encode: Callable[[list[str]], list[list[int]]]) -> None:
        self.encode = encode  # texts -> their tokens, no special tokens added
        self._trees: weakref.WeakKeyDictionary[ChoiceSet, PrefixTree] = weakref.WeakKeyDictionary()

    def __call__(self, choices: ChoiceSet) -> PrefixTree:
        if choices not in self._trees:
            self._trees[choices] = PrefixTree([tuple(tokens) for tokens in self.encode([c.text for c in choices.choices])])
        return self._trees[choices]


class TokenWalker:
    """Which tokens may come next in a constraint's answer written token by token: each line's head and suffix forced
    token by token, its choice walked down the token prefix tree among the choices neither excluded nor used, then the
    end token. `allowed()` lists the tokens that may come next; `advance(token)` writes one of them.
    """

    def __init__(self, constraint: AnswerConstraint, tree: PrefixTree, encode: Callable[[str], list[int]], end: int) -> None:
        self.constraint, self.tree, self.encode, self.end = constraint, tree, encode, end
        self.used: set[int] = set()
        self.forced = deque(encode(constraint.head(1)))  # tokens to write before the next choice (or the end)
        self.choice_next = True  # a choice follows the forced tokens
        self.node: int | None = None  # inside a choice: its tree node, and how many tokens of the node's label are written
        self.depth = 0
        self.alive: Callable[[int], bool] = tree.alive(constraint.excluded)
        self._settle()

    def allowed(self) -> list[int]:
        if self.forced:
            return [self.forced[0]]
        if self.node is None:
            return [self.end]
        label = self.tree.labels[self.node]
        if self.depth < len(label):
            return [label[self.depth]]
        allowed = [symbol for symbol, child in self.tree.children[self.node].items() if self.alive(child)]
        if self._ends_here():
            allowed += self._after(self.tree.end[self.node])[:1] or [self.end]
        return allowed

    def advance(self, token: int) -> None:
        if self.forced:
            self.forced.popleft()
        elif self.node is not None:
            child = self.tree.children[self.node].get(token)
            if self.depth < len(self.tree.labels[self.node]):
                self.depth += 1
            elif child is not None and self.alive(child):
                self.node, self.depth = child, 1
            else:  # the line ended where a longer choice could have gone on: the token opens what follows
                self._finish()
                if self.forced:
                    self.forced.popleft()
            if self.node is not None and self._ends_here() and not self._goes_on():
                self._finish()
        self._settle()

    def _ends_here(self) -> bool:
        """The written tokens are a whole choice that may still be written."""
        position = self.tree.end[self.node]
        return (
            self.depth == len(self.tree.labels[self.node])
            and position >= 0
            and position not in self.constraint.excluded
            and position not in self.used
        )

    def _goes_on(self) -> bool:
        return any(self.alive(child) for child in self.tree.children[self.node].values())

    def _after(self, position: int) -> list[int]:
        """The tokens after choice `position`: its suffix, and the next line's head unless it was the last line."""
        last = len(self.used) + 1 == self.constraint.lines
        suffix = self.constraint.choices.choices[position].suffix
        return self.encode(suffix + ("" if last else self.constraint.head(len(self.used) + 2)))

    def _finish(self) -> None:
        position = self.tree.end[self.node]
        self.forced = deque(self._after(position))
        self.used.add(position)
        self.choice_next = len(self.used) < self.constraint.lines
        self.node = None

    def _settle(self) -> None:
        """Start the next choice once its head is written."""
        if not self.forced and self.choice_next:
            self.choice_next = False
            self.alive = self.tree.alive(self.constraint.excluded | self.used)
            self.node, self.depth = 0, 0


def pick_token(
    logits: np.ndarray, allowed: Sequence[int] | None, temperature: float, top_p: float, rng: np.random.Generator | None
) -> int:
    """A token id given the model's logits over its vocabulary, among `allowed` (None: any): the most likely (no `rng`,
    or a temperature of 0), else drawn from their softmax at `temperature`, cut to its top-p nucleus."""
    ids = None if allowed is None else np.asarray(allowed)
    scores = logits if ids is None else logits[ids]
    if rng is None or temperature <= 0 or len(scores) == 1:
        best = int(np.argmax(scores))
        return best if ids is None else int(ids[best])
    weights = np.exp((scores.astype(np.float64) - scores.max()) / temperature)
    kept = nucleus(weights / weights.sum(), top_p)
    chosen = kept[rng.choice(len(kept), p=weights[kept] / weights[kept].sum())]
    return int(chosen) if ids is None else int(ids[chosen])


def nucleus(probabilities: np.ndarray, top_p: float) -> np.ndarray:
    """The indices of the fewest most likely entries whose probabilities reach `top_p`, most likely first (found among
    the most likely few first, which is enough unless the distribution is flat)."""
    size = 64
    while True:
        size = min(size, len(probabilities))
        top = np.argpartition(-probabilities, size - 1)[:size] if size < len(probabilities) else np.arange(size)
        top = top[np.argsort(-probabilities[top], kind="stable")]
        cumulative = np.cumsum(probabilities[top])
        if cumulative[-1] >= top_p or size == len(probabilities):
            return top[: min(size, int(np.searchsorted(cumulative, top_p)) + 1)]
        size *= 16
