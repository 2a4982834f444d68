"""Results files: one row per system and protocol (`result_entry`), the document of a run, reading and writing it,
its markdown table, and the poster's published table beside which ours is drawn."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from dualrec.config import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, EVAL_KS, POSTER_PROTOCOL
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


# The poster's baseline rows are PO4ISR's: its ML-1M sessions, systems trained on 150 of them, each target among 20
# candidates. Our `poster` protocol (dualrec.data.poster) rebuilds that setting; each row is compared with ours of the
# system PO4ISR ran (its "SLIM" row is its SKNN, which gives exactly those figures on PO4ISR's published files).
POSTER_SOURCES = {
    "MostPop": "mostpop",
    "SLIM": "sknn",
    "FPMC": "fpmc",
    "NARM": "narm",
    "STAMP": "stamp",
    "GCE-GNN": "gcegnn",
    "MCPRN": "mcprn",
    "HIDE": "hide",
    "Atten-Mixer": "attenmixer",
    "UniSRec": "unisrec",
    "NIR": "nir",
}
POSTER_TRAIN_SAMPLE = "150"  # the poster's setting: what its rows are compared with
POSTER_NOTES = {
    "MostPop": "HR@1 and NDCG@1 are shown as printed (0.0004); PO4ISR's MostPop gives 0.0040 on its 150 sessions, so "
    "the printed figure has probably lost a digit. PO4ISR's MostPop ignores the candidates: it hits only when the target "
    "is among the k most popular movies of the catalogue (our row's po4isr_mostpop figures), so the poster's MostPop is "
    "no measure of ranking 20 candidates.",
    "SLIM": "The poster's SLIM row is PO4ISR's SKNN: its figures are exactly SKNN's on PO4ISR's published files (150 "
    "training sessions, candidate seed 2023, one of the five), so it is compared with our sknn row.",
}


def system_of(entry: dict) -> str:
    """A row's system as `dualrec evaluate --systems` names it (the row's setting in brackets dropped, lower case: NIR's
    "NIR (smollm2-135m, not GPT-3) (...)" is "nir")."""
    return entry["system"].split(" (")[0].lower()


def poster_comparison(entries: list[dict]) -> list[dict]:
    """Each figure of the poster's baseline rows beside ours for the system PO4ISR ran, under the poster protocol on
    150 training sessions: ours with its interval, and whether the poster's figure lies outside it (None: no row)."""
    ours = {
        system_of(entry): entry
        for entry in entries
        if entry["protocol"] == POSTER_PROTOCOL and entry.get("extra", {}).get("train_sample") == POSTER_TRAIN_SAMPLE
    }
    rows = []
    for row in POSTER_RESULTS:
        if row["protocol"] != POSTER_BASELINE_PROTOCOL:
            continue
        entry = ours.get(POSTER_SOURCES[row["system"]])
        for metric in POSTER_METRICS:
            figure = {"poster system": row["system"], "ours": entry and entry["system"], "metric": metric, "poster": row[metric]}
            m = entry and entry["metrics"][metric]
            figure |= {"value": m and m["value"], "low": m and m["low"], "high": m and m["high"]}
            figure["outside"] = None if not m else not m["low"] <= row[metric] <= m["high"]
            figure["as_po4isr"] = entry and entry["extra"].get("po4isr_mostpop", {}).get(metric)  # MostPop scored its way
            rows.append(figure)
    return rows


def poster_comparison_table(entries: list[dict]) -> str:
    """The comparison as markdown: a row per poster system, per metric "poster | ours [interval]", "outside" marked;
    empty without a poster-protocol row on 150 training sessions."""
    figures = poster_comparison(entries)
    if not any(figure["ours"] for figure in figures):
        return ""
    rows: dict[str, dict[str, str]] = {}
    for f in figures:
        row = rows.setdefault(f["poster system"], {"poster's row": f["poster system"], "ours": f["ours"] or "(no row)"})
        ours = f"{f['value']:.4f} [{f['low']:.3f}, {f['high']:.3f}]" if f["ours"] else "-"
        row[f["metric"]] = f"{f['poster']:.4f} vs {ours}" + (" **outside**" if f["outside"] else "")
        row[f["metric"]] += f" (PO4ISR's way: {f['as_po4isr']:.4f})" if f["as_po4isr"] is not None else ""
    notes = "\n".join(f"- {name}: {note}" for name, note in POSTER_NOTES.items())
    caption = (
        "The poster's figure vs ours (poster protocol, 150 training sessions; mean over the candidate seeds [95% "
        "bootstrap interval over sessions]); **outside**: the poster's figure lies outside our interval.\n"
    )
    return caption + markdown(list(rows.values())) + "\n\n" + notes


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


def seeds_text(label: str, seeds: list) -> str:
    """Seeds in words, plural when several: 'candidate seed 0', 'negative seeds 0, 1'."""
    return f"{label}{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


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
