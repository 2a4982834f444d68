"""Load time, time to first token and tokens/s of the embedded SmolLM2 GGUF on this machine, per engine.

    python benchmarks/bench_llm.py [--tokens 128] [--runs 3] [--torch-threads N] [--adapter FOLDER]
        [--prompt-chunks 16,64,512]

transformers: the first load converts the GGUF into an empty temporary cache, the second loads the converted
folder. llama.cpp reads the GGUF directly: first and second load in this process. Tokens are counted with
the model's tokenizer; time to first token includes applying the chat template and the prompt's prefill.
--adapter also times 'smollm2-135m+FOLDER' (a LoRA adapter) on both engines: transformers with peft, llama.cpp with
the adapter as a GGUF LoRA (converted beside the adapter on its first use, which the first load then includes).
--prompt-chunks times llama.cpp reading a 30-movie history prompt from an empty cache in chunks of each size (the
backend reads prompts in chunks of PROMPT_CHUNK), median of --runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import torch

from dualrec.llm import DEFAULT_PRESET, GenerationSettings, LLMBackend, load_backend
from dualrec.llm.llamacpp_backend import llamacpp_available

PROMPT = (
    "Below is a user's movie watching history:\n"
    "- Heat (1995) (Action, Crime, Thriller)\n"
    "- Casino (1995) (Drama, Thriller)\n"
    "Based on this, the system (LSTM) recommends: Fargo (1996).\n"
    "Now, as a helpful assistant, recommend 3 more full movie titles with release years and genres "
    "that this user would likely enjoy next."
)


def timed_load(spec: str, engine: str) -> tuple[LLMBackend, float]:
    started = time.perf_counter()
    backend = load_backend(spec, engine=engine)
    return backend, time.perf_counter() - started


def timed_stream(backend: LLMBackend, settings: GenerationSettings, tokenizer) -> tuple[float, float]:
    """(seconds to the first chunk, tokens per second after it)."""
    started = time.perf_counter()
    chunks = backend.stream(PROMPT, settings)
    next(chunks)
    first_at = time.perf_counter()
    rest = "".join(chunks)
    return first_at - started, len(tokenizer.encode(rest, add_special_tokens=False)) / (time.perf_counter() - first_at)


def bench(spec: str, engine: str, settings: GenerationSettings, runs: int, tokenizer=None) -> LLMBackend:
    """Print one model's figures on one engine; return the loaded backend. Tokens are counted with `tokenizer` or its own."""
    backend, first_load = timed_load(spec, engine)
    backend.close()
    backend, second_load = timed_load(spec, engine)
    tokenizer = tokenizer or backend.tokenizer
    timed_stream(backend, settings, tokenizer)  # warm-up
    ttft, speed = zip(*(timed_stream(backend, settings, tokenizer) for _ in range(runs)))
    print(
        f"{spec} on {engine:12s} | load first {first_load:6.2f} s, again {second_load:5.2f} s "
        f"| first token {statistics.median(ttft) * 1000:5.0f} ms | {statistics.median(speed):6.1f} tokens/s",
        flush=True,
    )
    return backend


def prompt_chunks(sizes: list[int], runs: int) -> None:
    """Milliseconds llama.cpp takes to read a long prompt from an empty cache, per chunk size."""
    backend = load_backend(DEFAULT_PRESET, engine="llama.cpp")
    history = "\n".join(PROMPT.splitlines()[1:3] * 15)  # 30 movies, as the LSTM's window
    tokens = backend._chat_tokens([{"role": "user", "content": PROMPT.replace(PROMPT.splitlines()[1], history, 1)}])
    for size in sizes:
        seconds = []
        for _ in range(runs):
            backend.llama.reset()
            started = time.perf_counter()
            for start in range(0, len(tokens), size):
                backend.llama.eval(tokens[start : start + size])
            seconds.append(time.perf_counter() - started)
        print(f"llama.cpp reads a {len(tokens)}-token prompt in chunks of {size:3d}: {statistics.median(seconds) * 1000:6.0f} ms")
    backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128, help="max new tokens per run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per engine (medians are printed)")
    parser.add_argument("--torch-threads", type=int, help="torch's CPU threads (default: torch's choice)")
    parser.add_argument("--adapter", help=f"also time this LoRA adapter folder on both engines, as {DEFAULT_PRESET}+FOLDER")
    parser.add_argument("--prompt-chunks", help="time llama.cpp reading a long prompt in chunks of these sizes, e.g. 16,64,512")
    args = parser.parse_args()
    if args.prompt_chunks:
        print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
        prompt_chunks([int(size) for size in args.prompt_chunks.split(",")], args.runs)
        return
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["DUALREC_CACHE_DIR"] = tempfile.mkdtemp(prefix="dualrec-bench-llm-")
    settings = GenerationSettings(max_new_tokens=args.tokens, temperature=0.7, seed=0)
    print(
        f"{DEFAULT_PRESET}: up to {args.tokens} new tokens, median of {args.runs} runs, {os.cpu_count()} CPU cores, "
        f"torch threads {torch.get_num_threads()}"
    )
    for spec in [DEFAULT_PRESET] + ([f"{DEFAULT_PRESET}+{args.adapter}"] if args.adapter else []):
        reference = bench(spec, "transformers", settings, args.runs)
        if llamacpp_available():
            bench(spec, "llama.cpp", settings, args.runs, reference.tokenizer).close()
        else:
            print("llama.cpp    | not installed (pip install llama-cpp-python)")
        reference.close()
    shutil.rmtree(os.environ["DUALREC_CACHE_DIR"])


if __name__ == "__main__":
    main()
