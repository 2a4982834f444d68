"""`dualrec evaluate --protocol poster`: the poster's own protocol (PO4ISR's ML-1M sessions and 20 candidates)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from dualrec.commands.common import add_field_options, options_from_args, run_settings, whole_numbers
from dualrec.config import POSTER_PROTOCOL, PosterConfig
from dualrec.errors import ConfigError
from dualrec.evaluation.results import poster_comparison_table, results_tables, write_results


def add_poster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        f"poster protocol (--protocol {POSTER_PROTOCOL}: PO4ISR's ML-1M sessions, each target among 20 candidates)"
    )
    add_field_options(group, PosterConfig, ("train_sample", "candidate_seeds"), types={"candidate_seeds": whole_numbers})


def poster_options(args: argparse.Namespace, protocols: list[str]) -> PosterConfig | None:
    """The poster protocol's options (bad ones raise ConfigError even when it is not chosen); None unless it is chosen,
    alone: its sessions are other data than the other protocols' cases."""
    options = options_from_args(PosterConfig(), args)
    if POSTER_PROTOCOL not in protocols:
        return None
    if len(protocols) > 1:
        raise ConfigError(
            f"--protocol {POSTER_PROTOCOL} is its own data (PO4ISR's sessions), not the cases of the others: run it alone, "
            f"not with {', '.join(name for name in protocols if name != POSTER_PROTOCOL)}."
        )
    return options


def run_poster(
    args: argparse.Namespace,
    systems: list[str],
    options: PosterConfig,
    out: Path,
    llm_options: Mapping[str, object],
    limits: Mapping[str, int | None],
) -> None:
    """The run: `llm_options` make the hybrid and NIR; `limits` (--hybrid-limit, --hybrid-valid-limit) draw that many
    of the 1,000 sampled test and validation sessions, with --hybrid-limit-seed."""
    from dualrec.data.poster import load_poster
    from dualrec.evaluation.poster import check_poster_run, evaluate_poster

    check_poster_run(systems, args.split)
    data = load_poster(args.data_dir, use_cache=not args.no_cache)
    sample = {"limits": limits, "limit_seed": args.hybrid_limit_seed}
    document = evaluate_poster(systems, data, options, **run_settings(args), llm_options=llm_options, **sample)
    document["options"]["data_dir"] = args.data_dir
    path = write_results(document, out)
    print(results_tables(document["results"]))
    comparison = poster_comparison_table(document["results"])
    print(f"\n{comparison}" if comparison else "")
    print(
        f"\n{len(document['results'])} rows, {document['data']['cases']} sampled {args.split} sessions, "
        f"{document['seconds']} s; 95% bootstrap intervals over sessions in brackets, ± spread "
        f"over candidate seeds. Written to {path}"
    )
