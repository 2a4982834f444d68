"""Results files: one row per system and protocol (`result_entry`), the document of a run, reading and writing it,
its markdown table, and the poster's published table beside which ours is drawn."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from dualrec.config import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, EVAL_KS
from dualrec.data.dataset import Dataset
from dualrec.errors import DualrecError
from dualrec.evaluation.metrics import LEVEL, list_diversity, summarise
from dualrec.evaluation.significance import COMPARED, MCNEMAR_K

FORMAT_VERSION = 1

# The poster's table (docs/design.md §1), kept as data so the app can draw ours beside it.
POSTER_METRICS = ("HR@1", "HR@5", "NDCG@1", "NDCG@5")
POSTER_BASELINE_PROTOCOL = "sampled-20 (as published)"
POSTER_DUALREC_PROTOCOL = "free-form, last 5 movies, answers leaked"
POSTER_CAVEAT = (
    "The poster's baseline rows rank each target among 20 candidates (the target + 19 random negatives; random "
    "guessing gives HR@5 = 0.25). Its DUALRec rows come from free-form generation scored against the user's last 5 "
    "movies with fuzzy title matching, in code that let the answers into its re-ranking step. The two halves are not "
    "comparable with each other, and each is comparable only with our rows of the same protocol."
)
POSTER_RESULTS: list[dict] = [
    {"system": system, "protocol": protocol, "HR@1": h1, "HR@5": h5, "NDCG@1": n1, "NDCG@5": n5}
    for system, protocol, h1, h5, n1, n5 in [
        ("MostPop", POSTER_BASELINE_PROTOCOL, 0.0004, 0.0070, 0.0004, 0.0053),
        ("SLIM", POSTER_BASELINE_PROTOCOL, 0.1270, 0.3600, 0.1270, 0.2530),
        ("FPMC", POSTER_BASELINE_PROTOCOL, 0.1132, 0.3748, 0.1132, 0.2464),
        ("NARM", POSTER_BASELINE_PROTOCOL, 0.1692, 0.5230, 0.1692, 0.3501),
        ("STAMP", POSTER_BASELINE_PROTOCOL, 0.1584, 0.5078, 0.1584, 0.3367),
        ("GCE-GNN", POSTER_BASELINE_PROTOCOL, 0.1312, 0.4748, 0.1312, 0.3044),
        ("MCPRN", POSTER_BASELINE_PROTOCOL, 0.1434, 0.4758, 0.1434, 0.3157),
        ("HIDE", POSTER_BASELINE_PROTOCOL, 0.1498, 0.4998, 0.1498, 0.3256),
        ("Atten-Mixer", POSTER_BASELINE_PROTOCOL, 0.1490, 0.4932, 0.1490, 0.3216),
        ("UniSRec", POSTER_BASELINE_PROTOCOL, 0.0508, 0.2508, 0.0508, 0.1459),
        ("NIR", POSTER_BASELINE_PROTOCOL, 0.0572, 0.2326, 0.0572, 0.1436),
        ("DUALRec, DeepSeek V3 (API)", POSTER_DUALREC_PROTOCOL, 0.1371, 0.1425, 0.1371, 0.1406),
        ("DUALRec, Mistral 8B", POSTER_DUALREC_PROTOCOL, 0.0810, 0.0907, 0.0810, 0.0871),
        ("DUALRec, DeepSeek-R1-Distill-Qwen-1.5B + LoRA", POSTER_DUALREC_PROTOCOL, 0.0583, 0.0605, 0.0583, 0.0597),
        ("DUALRec, Mistral-7B + LoRA", POSTER_DUALREC_PROTOCOL, 0.1847, 0.2214, 0.1847, 0.2078),
    ]
]


def result_entry(
    system: str,
    protocol: str,
    ranks: np.ndarray,
    *,
    options: dict | None = None,
    seconds: dict | None = None,
    lists: np.ndarray | None = None,
    genres: np.ndarray | None = None,
    extra: dict | None = None,
    ks: tuple[int, ...] = EVAL_KS,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict:
    """One row of a results file: a system under a protocol. `ranks` is (repeats, cases) or (cases,); `lists` and
    `genres` (the catalogue's multi-hots) add coverage and genre similarity; `extra` holds protocol-specific figures
    (e.g. a generative system's hallucination rate)."""
    ranks = np.atleast_2d(ranks)
    entry = {"system": system, "protocol": protocol, "cases": ranks.shape[1], "metrics": summarise(ranks, ks, samples, seed)}
    if lists is not None and genres is not None:
        entry["lists"] = list_diversity(lists, genres)
    return entry | {"extra": extra or {}, "options": options or {}, "seconds": seconds or {}}


def results_document(entries: list[dict], dataset: Dataset, split: str, samples: int, seed: int, seconds: float) -> dict:
    """The JSON of one run: the data it ran on, how intervals were drawn, and the entries."""
    return {
        "format": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {
            "fingerprint": dataset.fingerprint,
            "config": dataset.config.as_dict(),
            "split": split,
            "cases": len(dataset.cases[split]),
        },
        "bootstrap": {"samples": samples, "seed": seed, "level": LEVEL, "over": "cases"},
        "seconds": round(seconds, 1),
        "results": entries,
    }


def write_results(document: dict, path: str | Path) -> Path:
    """Write a results document atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".json.part")
    with os.fdopen(handle, "w") as out:
        json.dump(document, out, indent=1)
        out.write("\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return path


def read_results(path: str | Path) -> dict:
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise DualrecError(f"Cannot read results file {path}: {error}") from error
    if document.get("format") != FORMAT_VERSION:
        raise DualrecError(f"{path} is not a DUALRec results file of format {FORMAT_VERSION}.")
    return document


def table_rows(entries: list[dict], intervals: bool = True) -> list[dict[str, str]]:
    """Printable rows: system, protocol and each metric as "value [low, high]" (± the seed spread when repeated)."""
    rows = []
    for entry in entries:
        row = {"system": entry["system"], "protocol": entry["protocol"]}
        for name, m in entry["metrics"].items():
            text = f"{m['value']:.4f}"
            if intervals:
                text += f" [{m['low']:.3f}, {m['high']:.3f}]"
            if "std" in m:
                text += f" ±{m['std']:.3f}"
            row[name] = text
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, str]]) -> str:
    """Rows of text as a markdown table, its columns the first row's."""
    if not rows:
        return ""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.get(column, "") for column in header) + " |" for row in rows]
    return "\n".join(lines)


def markdown_table(entries: list[dict], intervals: bool = True) -> str:
    """The entries as a markdown table (95% bootstrap intervals in brackets; ± the spread over negative seeds)."""
    return markdown(table_rows(entries, intervals))


def comparison_rows(entries: list[dict], intervals: bool = True) -> list[dict[str, str]]:
    """Printable rows of the entries paired with their baseline on the same cases (a re-ranker's `paired` figures): its
    weight w, the baseline's ceiling (HR@N of the N re-ranked), each metric's difference (system minus baseline) with
    its paired bootstrap interval, and the exact McNemar test on HR@5 (cases only the system hits vs only the baseline;
    one test per negative seed)."""
    rows = []
    for entry in entries:
        paired = entry.get("extra", {}).get("paired")
        if not paired:
            continue
        row = {"system": entry["system"], "protocol": entry["protocol"], "baseline": paired["baseline"]}
        row["w"] = str(entry["options"].get("weight", ""))
        row["ceiling"] = ", ".join(f"{name} {value:.4f}" for name, value in entry["extra"].get("ceiling", {}).items())
        for name in COMPARED:
            difference = paired[name]
            text = f"{difference['difference']:+.4f}"
            row[f"Δ{name}"] = text + (f" [{difference['low']:+.3f}, {difference['high']:+.3f}]" if intervals else "")
        tests = paired["mcnemar"]
        row[f"McNemar HR@{MCNEMAR_K}"] = "; ".join(
            f"{test['system_only']} vs {test['baseline_only']}, p {test['p_value']:.3g}" for test in tests
        )
        rows.append(row)
    return rows


def results_tables(entries: list[dict], intervals: bool = True) -> str:
    """The markdown table of the entries, and below it, when some are paired with a baseline, the table of their
    paired differences."""
    paired = markdown(comparison_rows(entries, intervals))
    caption = (
        "\n\nPaired with the baseline on the same cases: differences (system minus baseline)"
        + (" with 95% paired bootstrap intervals" if intervals else "")
        + f"; exact McNemar on HR@{MCNEMAR_K}: cases only the system hits vs only the baseline (one per negative seed)\n"
    )
    return markdown_table(entries, intervals) + (caption + paired if paired else "")
