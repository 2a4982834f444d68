"""Grounded decoding: what building the constraint costs, and how fast the embedded model answers free, grounded by the
engine's decoder, and (llama.cpp) grounded the way it was before: llama.cpp's GBNF grammar sampler, line by line.

    python benchmarks/bench_grounded.py --data-dir ../shared/data/ml-1m-full-order [--users 3] [--k 10]
        [--engines llama.cpp,transformers] [--modes free,grounded,gbnf] [--torch-threads 1]

Build: the catalogue's choices and prefix tree (once per catalogue), one request's constraint (the history excluded),
the tree over each engine's tokens (once per tokenizer), one line's GBNF grammar and llama.cpp parsing it (the GBNF
path). Decoding: the same list-k prompts (test users, greedy, no LSTM pick) answered per engine and mode: seconds per
answer, tokens per second (the answer's tokens by the model's tokenizer over the answer's time), ms per title token
(the answer's time over the tokens of its titles, the part the model chooses), titles per answer, and what the project's
matcher finds (hallucinations, distinct unwatched movies). `gbnf` is the design our token decoder replaced (kept here,
not in the library, to measure against): each line sampled by `Llama.generate` under a GBNF grammar of the choices left.
"""

from __future__ import annotations

import argparse
import codecs
import os
import statistics
import threading
import time
from collections.abc import Iterator

import torch

from dualrec.data.dataset import load_dataset
from dualrec.grounding import grounded
from dualrec.grounding.grounded import answer_constraint, catalogue_choices
from dualrec.grounding.pipeline import Stage2Prompt, Stage2Result, interpret, prepare_prompt, run_stage2, user_history
from dualrec.llm import DEFAULT_PRESET, GenerationSettings, LLMBackend, load_backend
from dualrec.llm.base import to_messages
from dualrec.llm.constraint import AnswerConstraint, GroundingError, write_lines

GREEDY = GenerationSettings(greedy=True)


def ms(seconds: list[float]) -> str:
    return f"{1000 * statistics.median(seconds):.1f} ms (median of {len(seconds)})"


def timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - started


def checked_grammar(llama, gbnf: str):
    """`gbnf` as a LlamaGrammar once llama.cpp has parsed it."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(llama._model.vocab, gbnf.encode(), b"root")
    if not sampler:
        raise GroundingError(f"llama.cpp rejected the grammar: {gbnf[:120]!r}...")
    llama_cpp.llama_sampler_free(sampler)
    return llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)


def gbnf_answer(backend: LLMBackend, prompt: str, constraint: AnswerConstraint) -> Iterator[str]:
    """A greedy grounded answer the former way: each line by `Llama.generate` under the GBNF grammar of the choices
    neither excluded nor used, continuing the prompt and the lines so far (llama.cpp reuses the cached prefix)."""
    import llama_cpp

    llama = backend.llama
    llama.reset()
    tokens = backend._chat_tokens(to_messages(prompt))

    def decode_line(answer: str, used: frozenset[int]) -> Iterator[str]:
        grammar = checked_grammar(llama, constraint.gbnf(used))
        decoder = codecs.getincrementaldecoder("utf-8")()
        line = tokens + llama.tokenize(answer.encode(), add_bos=False, special=False)
        generated = llama.generate(line, temp=0.0, grammar=grammar)
        try:
            for token in generated:
                if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                    return
                if text := decoder.decode(llama.detokenize([token])):
                    yield text
        finally:
            generated.close()

    return write_lines(constraint, decode_line, threading.Event())


def bench_build(dataset, prompts: list[Stage2Prompt], backends: dict[str, LLMBackend]) -> None:
    grounded._CACHE.clear()
    (choices, _), first = timed(catalogue_choices, dataset)
    constraints, per_request = zip(*(timed(answer_constraint, dataset, p.history, p.k) for p in prompts))
    print(f"catalogue choices and prefix tree ({len(choices)} movies, once per catalogue): {1000 * first:.1f} ms")
    print(f"one request's constraint (history excluded): {ms(per_request)}")
    for engine, backend in backends.items():
        tree, seconds = timed(backend.token_tree, choices)
        print(f"token prefix tree ({engine} tokenizer, once per tokenizer): {1000 * seconds:.1f} ms, {len(tree):,} nodes")
    grammars, per_line = zip(*(timed(c.gbnf, set(range(9))) for c in constraints))
    print(f"one line's GBNF grammar ({len(grammars[0]):,} characters, servers and the gbnf mode): {ms(per_line)}")
    if "llama.cpp" in backends:
        parse = [timed(checked_grammar, backends["llama.cpp"].llama, grammar)[1] for grammar in grammars]
        print(f"llama.cpp parsing it: {ms(parse)}")


def count_tokens(backend: LLMBackend, text: str) -> int:
    if hasattr(backend, "llama"):
        return len(backend.llama.tokenize(text.encode(), add_bos=False, special=False))
    return len(backend.tokenizer.encode(text, add_special_tokens=False))


def answer(dataset, backend: LLMBackend, prompt: Stage2Prompt, mode: str) -> Stage2Result:
    if mode != "gbnf":
        return run_stage2(dataset, backend, prompt, GREEDY, grounded=mode == "grounded")
    started = time.perf_counter()
    text = "".join(gbnf_answer(backend, prompt.text, answer_constraint(dataset, prompt.history, prompt.k)))
    return interpret(dataset, prompt, text, time.perf_counter() - started)


def bench_answers(dataset, backend: LLMBackend, prompts: list[Stage2Prompt], engine: str, modes: list[str]) -> dict:
    run_stage2(dataset, backend, prompts[0], GREEDY, grounded=True)  # warm-up (the token tree is built here)
    answers = {}
    for mode in modes:
        results = [answer(dataset, backend, p, mode) for p in prompts]
        answers[mode] = [r.answer for r in results]
        print(f"    {mode}, first answer: " + results[0].answer[:300].replace("\n", "\n    "))
        seconds = sum(r.seconds for r in results)
        tokens = sum(count_tokens(backend, r.answer) for r in results)
        title_tokens = sum(count_tokens(backend, f" {m.title} ({m.year})") for r in results for m in r.titles)
        titles = sum(len(r.titles) for r in results)
        distinct = all(len(r.recommended) == len(r.titles) for r in results)  # matched, unwatched, no repeat
        per_title_token = f"{1000 * seconds / title_tokens:5.1f}" if title_tokens else "    -"
        print(
            f"{engine:<12} {mode:<8} {seconds / len(results):6.2f} s/answer  {tokens / seconds:6.1f} tokens/s  "
            f"{per_title_token} ms/title token  {titles / len(results):4.1f} titles/answer  "
            f"hallucinations {sum(r.hallucinations for r in results)}/{titles}"
            + ("" if mode == "free" else f"  every title a distinct unwatched movie: {distinct}")
        )
    if {"grounded", "gbnf"} <= answers.keys():
        same = sum(a == b for a, b in zip(answers["grounded"], answers["gbnf"]))
        print(f"{engine:<12} greedy answers identical, grounded vs gbnf: {same}/{len(prompts)}")
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="a MovieLens 1M folder")
    parser.add_argument("--users", type=int, default=3, help="test users answered per engine and mode (default %(default)s)")
    parser.add_argument("--k", type=int, default=10, help="movies per answer (default %(default)s)")
    parser.add_argument("--engines", default="llama.cpp,transformers", help="comma-separated (default %(default)s)")
    parser.add_argument("--modes", default="free,grounded,gbnf", help="comma-separated; gbnf: llama.cpp only")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for transformers (default %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()}")
    dataset = load_dataset(args.data_dir)
    users = dataset.split_users["test"][: args.users]
    prompts = [prepare_prompt(dataset, user_history(dataset, int(u)), None, "list-k", args.k) for u in users]
    backends = {engine: load_backend(DEFAULT_PRESET, engine=engine) for engine in args.engines.split(",")}
    bench_build(dataset, prompts, backends)
    print(f"\n{len(prompts)} test users, list-k, k {args.k}, greedy, no LSTM pick")
    for engine, backend in backends.items():
        modes = [m for m in args.modes.split(",") if m != "gbnf" or engine == "llama.cpp"]
        bench_answers(dataset, backend, prompts, engine, modes)
        backend.close()


if __name__ == "__main__":
    main()
