"""NIR's candidates without the LLM: how often the target is among them (the ceiling of every NIR run) and how their
own order ranks it (the filtering's votes, best first: the control for the LLM's re-ranking), for user and item
filtering, on all test cases and on a seeded subsample (the reference run's: 100 cases, seed 0), and the time taken.

    python benchmarks/bench_nir.py [--data-dir ../shared/data/ml-1m-full-order] [--limit 100] [--limit-seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dualrec.data.dataset import load_dataset  # noqa: E402
from dualrec.evaluation.freeform import sample_cases  # noqa: E402
from dualrec.evaluation.harness import ranks_of_lists  # noqa: E402
from dualrec.evaluation.metrics import summarise  # noqa: E402
from dualrec.evaluation.results import markdown  # noqa: E402
from dualrec.ranking.nir import FILTERINGS, LIST_LENGTH, NIROptions, NIRRecommender  # noqa: E402

REAL_DATA = ROOT.parent / "shared" / "data" / "ml-1m-full-order"
SHOWN = ("HR@1", "HR@5", "HR@10", "NDCG@10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REAL_DATA))
    parser.add_argument("--limit", type=int, default=100, help="the subsample's size (default %(default)s)")
    parser.add_argument("--limit-seed", type=int, default=0, help="its seed (default %(default)s)")
    args = parser.parse_args()
    dataset = load_dataset(args.data_dir)
    everyone = dataset.cases["test"]
    drawn = sample_cases(everyone, args.limit, args.limit_seed)
    samples = {f"all {len(everyone)}": everyone, f"{len(drawn)}, seed {args.limit_seed}": drawn}
    rows = []
    for filtering in FILTERINGS:
        nir = NIRRecommender(NIROptions(filtering=filtering), backend=None)
        started = time.perf_counter()
        nir.learn(dataset)
        learned = time.perf_counter() - started
        for label, cases in samples.items():
            started = time.perf_counter()
            candidates = nir.own_candidates(dataset, cases)
            seconds = time.perf_counter() - started
            ranks = ranks_of_lists([row[:LIST_LENGTH].tolist() for row in candidates], cases.targets)
            metrics = summarise(ranks)
            ceiling = np.mean([target in row for target, row in zip(cases.targets, candidates)])
            row = {"filtering": filtering, "test cases": label, "ceiling": f"{ceiling:.3f}"}
            row |= {name: "{value:.3f} [{low:.3f}, {high:.3f}]".format(**metrics[name]) for name in SHOWN}
            row["seconds"] = f"{learned:.1f} + {seconds:.1f}"
            rows.append(row)
    print(markdown(rows))
    print("\nceiling: share of cases whose target is among the 19 candidates; HR/NDCG: the candidates' own order (votes),")
    print("the top 10 as NIR's list would be; seconds: reading the training users + finding the candidates.")


if __name__ == "__main__":
    main()
