"""Free-form evaluation against an OpenAI-compatible server at several concurrencies: wall time and answers/s.

    python benchmarks/bench_freeform_concurrency.py [--data-dir ../shared/data/ml-1m-full-order] [--latency 0.25]
        [--concurrency 1,8,32] [--limit N]

The server (tests/test_freeform_http.py's loopback one) answers every request after --latency seconds, as many at
once as it is sent, like a GPU server that batches (vLLM); each answer names its case's target, so HR@1 = 1 shows the
answers came back in case order. What is measured is the client's side: prompts, requests, matching, ranking.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dualrec.config import FREEFORM  # noqa: E402
from dualrec.data.dataset import load_dataset  # noqa: E402
from dualrec.evaluation import LLMAnswers, evaluate  # noqa: E402
from dualrec.llm import load_backend  # noqa: E402
from tests.test_freeform_http import case_answers, chat_server, most_at_once  # noqa: E402

REAL_DATA = ROOT.parent / "shared" / "data" / "ml-1m-full-order"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REAL_DATA), help="MovieLens 1M folder (default %(default)s)")
    parser.add_argument("--latency", type=float, default=0.25, help="seconds the server takes per answer (default %(default)s)")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrencies (default %(default)s)")
    parser.add_argument("--limit", type=int, help="a seeded subsample of the test cases (default: all)")
    args = parser.parse_args()

    dataset = load_dataset(args.data_dir)
    cases = len(dataset.cases["test"]) if args.limit is None else min(args.limit, len(dataset.cases["test"]))
    answers, _ = case_answers(dataset, cases)
    print(f"{cases} test cases, the server answering each after {args.latency} s")
    with chat_server(answers, delays=dict.fromkeys(answers, args.latency)) as server:
        for concurrency in map(int, args.concurrency.split(",")):
            server.spans.clear()
            backend = load_backend("custom", base_url=server.base_url, model="bench")
            system = LLMAnswers("bench", limit=cases, lstm_dir=str(ROOT / "no-lstm"), concurrency=concurrency, backend=backend)
            started = time.perf_counter()
            entry = evaluate([system], dataset, [FREEFORM], samples=100)["results"][0]
            seconds = time.perf_counter() - started
            ideal = cases * args.latency / concurrency
            print(
                f"concurrency {concurrency:3d} | {seconds:7.1f} s, {cases / seconds:6.1f} answers/s, "
                f"{most_at_once(server.spans)} at once at most, HR@1 {entry['metrics']['HR@1']['value']:.3f} | "
                f"server time alone {ideal:.1f} s"
            )


if __name__ == "__main__":
    main()
