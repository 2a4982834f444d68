"""The title matcher on this machine: index build time, titles/s, answers/s, and its precision/recall on the answer set.

    python benchmarks/bench_matching.py [--data-dir ../shared/data/ml-1m-full-order] [--repeat 5]

Titles: every ML-1M movie written the way people write it ("The Matrix", with its year), then without its year.
Answers: every answer of tests/answers/, parsed and matched (the work the app does on each answer).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dualrec.data.dataset import load_dataset  # noqa: E402
from dualrec.grounding.matching import TitleIndex, match_all  # noqa: E402
from dualrec.grounding.parsing import parse_answer  # noqa: E402
from tests.answers import evaluate, load_answers  # noqa: E402

REAL_DATA = ROOT.parent / "shared" / "data" / "ml-1m-full-order"


def best_seconds(work: Callable[[], object], repeat: int) -> float:
    """The fastest of `repeat` runs (the least disturbed by other work on a shared machine)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REAL_DATA), help="MovieLens 1M folder (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the fastest counts (default %(default)s)")
    args = parser.parse_args()

    dataset = load_dataset(args.data_dir)
    popularity = dataset.ratings["movie_id"].value_counts()
    build = best_seconds(lambda: TitleIndex(dataset.movies, popularity), args.repeat)
    index = TitleIndex(dataset.movies, popularity)
    print(f"index      | {len(index)} movies, {len(index.keys)} keys, built in {build * 1000:.0f} ms")

    movies = dataset.movies
    with_year = list(zip(movies["title"], movies["year"].astype(int)))
    for label, titles in (("with year", with_year), ("no year", [(title, None) for title, _ in with_year])):
        seconds = best_seconds(lambda titles=titles: [index.match(title, year) for title, year in titles], args.repeat)
        print(f"titles     | {label:9s}: {len(titles) / seconds:8.0f} titles/s ({seconds / len(titles) * 1e6:.0f} µs each)")

    answers = load_answers()
    count = sum(len(a.expect) for a in answers)

    def parse_and_match() -> None:
        for answer in answers:
            match_all(index, [(p.text, p.title, p.year) for p in parse_answer(answer.answer, answer.prompt)])

    seconds = best_seconds(parse_and_match, args.repeat)
    per_answer = [best_seconds(lambda a=a: parse_answer(a.answer, a.prompt), 1) for a in answers]
    print(
        f"answers    | {len(answers) / seconds:8.0f} answers/s parsed and matched ({count} titles, "
        f"{seconds / len(answers) * 1000:.2f} ms each; parsing alone median {statistics.median(per_answer) * 1000:.2f} ms)"
    )

    quality, wrong = evaluate(index, answers)
    print(
        f"answer set | {quality.titles} titles, {quality.in_movielens} in MovieLens: precision {quality.precision:.3f} "
        f"({quality.wrong} wrong), recall {quality.recall:.3f} ({len(quality.missed)} missed)"
    )
    for line in wrong + quality.missed:
        print(f"           | {line}")


if __name__ == "__main__":
    main()
