"""Grounded decoding: what building the constraint costs, and how fast the embedded model answers grounded vs free.

    python benchmarks/bench_grounded.py --data-dir ../shared/data/ml-1m-full-order [--users 3] [--k 10]
        [--engines llama.cpp,transformers] [--torch-threads 1]

Build: the catalogue's choices and prefix tree (once per catalogue), one request's constraint (the history excluded),
one line's GBNF grammar and llama.cpp parsing it, the tree over the tokenizer's tokens (once per tokenizer). Decoding:
the same list-k prompts (test users, greedy, no LSTM pick) answered free and grounded, per engine: seconds per answer,
tokens per second (the answer's tokens by the model's tokenizer over the whole answer time), titles matched and
hallucinations by the project's matcher. llama.cpp also decodes one line under the prefix-tree grammar and under the
flat alternation of the same titles, the design the tree replaces.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dualrec.data.dataset import load_dataset
from dualrec.grounding import grounded
from dualrec.grounding.grounded import answer_constraint, catalogue_choices
from dualrec.grounding.pipeline import Stage2Prompt, prepare_prompt, run_stage2, user_history
from dualrec.llm import DEFAULT_PRESET, GenerationSettings, LLMBackend, load_backend
from dualrec.llm.constraint import gbnf_literal

GREEDY = GenerationSettings(greedy=True)


def ms(seconds: list[float]) -> str:
    return f"{1000 * statistics.median(seconds):.1f} ms (median of {len(seconds)})"


def timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - started


def bench_build(dataset, prompts: list[Stage2Prompt], llama: LLMBackend | None) -> None:
    grounded._CACHE.clear()
    _, first = timed(catalogue_choices, dataset)
    constraints, per_request = zip(*(timed(answer_constraint, dataset, p.history, p.k) for p in prompts))
    grammars, per_line = zip(*(timed(c.gbnf, set(range(9))) for c in constraints))
    print(f"catalogue choices and prefix tree ({len(constraints[0].choices)} movies, once per catalogue): {1000 * first:.1f} ms")
    print(f"one request's constraint (history excluded): {ms(per_request)}")
    size = f"{len(grammars[0]):,} characters, {len(constraints[0].choices.tree):,} tree nodes"
    print(f"one line's GBNF grammar ({size}): {ms(per_line)}")
    if llama is not None:
        from dualrec.llm.llamacpp_backend import checked_grammar

        parse = [timed(checked_grammar, llama.llama, grammar)[1] for grammar in grammars]
        print(f"llama.cpp parsing it: {ms(parse)}")


def count_tokens(backend: LLMBackend, text: str) -> int:
    if hasattr(backend, "llama"):
        return len(backend.llama.tokenize(text.encode(), add_bos=False, special=False))
    return len(backend.tokenizer.encode(text, add_special_tokens=False))


def bench_answers(dataset, backend: LLMBackend, prompts: list[Stage2Prompt], engine: str) -> None:
    run_stage2(dataset, backend, prompts[0], GREEDY, grounded=True)  # warm-up (the token tree is built here)
    for grounded_answer in (False, True):
        results = [run_stage2(dataset, backend, p, GREEDY, grounded=grounded_answer) for p in prompts]
        seconds = [r.seconds for r in results]
        tokens = sum(count_tokens(backend, r.answer) for r in results)
        titles = sum(len(r.titles) for r in results)
        false = sum(r.hallucinations for r in results)
        print(
            f"{engine:<12} {'grounded' if grounded_answer else 'free':<8} {statistics.mean(seconds):6.2f} s/answer  "
            f"{tokens / sum(seconds):6.1f} tokens/s  {titles / len(results):4.1f} titles/answer  "
            f"hallucinations {false}/{titles}"
        )
        for result in results[:2]:
            print("    " + result.answer.replace("\n", "\n    "))


def bench_flat_grammar(dataset, backend: LLMBackend, prompt: Stage2Prompt) -> None:
    """One reply (one title) under the prefix tree's grammar and under a flat alternation of the same titles."""
    from dualrec.llm.llamacpp_backend import checked_grammar

    constraint = answer_constraint(dataset, prompt.history, 1)
    left = [c.text for i, c in enumerate(constraint.choices.choices) if i not in constraint.excluded]
    flat = "root ::= " + " | ".join(gbnf_literal(text) for text in left) + "\n"
    for name, grammar in (("prefix tree", constraint.gbnf()), ("flat alternation", flat)):
        backend.llama.reset()
        (reply, seconds) = timed(
            lambda g: backend.llama.create_chat_completion(
                messages=[{"role": "user", "content": prompt.text}],
                grammar=checked_grammar(backend.llama, g),
                max_tokens=constraint.longest_choice_bytes() + 1,
                temperature=0.0,
            ),
            grammar,
        )
        line = reply["choices"][0]["message"]["content"]
        print(f"llama.cpp one title, {name:<16} grammar {len(grammar):>6,} characters: {seconds:6.2f} s  {line!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="a MovieLens 1M folder")
    parser.add_argument("--users", type=int, default=3, help="test users answered per engine and mode (default %(default)s)")
    parser.add_argument("--k", type=int, default=10, help="movies per answer (default %(default)s)")
    parser.add_argument("--engines", default="llama.cpp,transformers", help="comma-separated (default %(default)s)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for transformers (default %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    dataset = load_dataset(args.data_dir)
    users = dataset.split_users["test"][: args.users]
    prompts = [prepare_prompt(dataset, user_history(dataset, int(u)), None, "list-k", args.k) for u in users]
    engines = args.engines.split(",")
    backends = {engine: load_backend(DEFAULT_PRESET, engine=engine) for engine in engines}
    bench_build(dataset, prompts, backends.get("llama.cpp"))
    if "transformers" in backends:
        _, tree = timed(backends["transformers"].token_tree, catalogue_choices(dataset)[0])
        print(f"token prefix tree (transformers tokenizer, once per tokenizer): {1000 * tree:.1f} ms")
    if "llama.cpp" in backends:
        bench_flat_grammar(dataset, backends["llama.cpp"], prompts[0])
    print(f"\n{len(prompts)} test users, list-k, k {args.k}, greedy, no LSTM pick")
    for engine, backend in backends.items():
        bench_answers(dataset, backend, prompts, engine)
        backend.close()


if __name__ == "__main__":
    main()
