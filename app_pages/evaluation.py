"""Evaluation: our results files (every system, protocol named, 95% intervals) beside the poster's table."""

from __future__ import annotations

import streamlit as st

from dualrec.app import state as app_state
from dualrec.app.figures import metric_figure
from dualrec.app.tables import (
    EVAL_COMMANDS,
    answer_files,
    evaluate_command,
    load_results,
    metric_frame,
    our_table,
    poster_baselines_without_results,
    poster_protocol_frame,
    poster_table,
)
from dualrec.config import EVAL_KS, EVAL_PROTOCOLS, POSTER_COMMAND, DataConfig
from dualrec.evaluation.results import POSTER_CAVEAT, POSTER_METRICS, POSTER_NOTES

METRICS = [f"{name}@{k}" for name in ("HR", "NDCG") for k in EVAL_KS]


def no_results(folders: list) -> None:
    st.info(
        f"No results yet in {' or '.join(map(str, folders))}. These commands make them (the first trains the LSTM):", icon="📊"
    )
    st.code("\n".join(EVAL_COMMANDS), language="bash")


def poster_protocol(entries: list[dict]) -> None:
    """The poster's baseline figures beside ours measured its way (PO4ISR's sessions and candidates)."""
    st.subheader("The poster's table, measured its way")
    st.caption(
        "Under the poster protocol: PO4ISR's ML-1M sessions (one user's day, windows of 20), systems trained on its "
        "sample of 150 training sessions, each of 1,000 sampled test sessions' targets ranked among 20 candidates (5 "
        "candidate seeds; ties count against the target). Ours: mean over the seeds [95% bootstrap interval over "
        "sessions]; ⚠: the poster's figure lies outside our interval."
    )
    frame = poster_protocol_frame(entries)
    if frame["ours"].astype(bool).any():
        st.dataframe(frame, hide_index=True)
    else:
        st.info("No poster-protocol results yet (trained on 150 sessions). This command makes them:", icon="📊")
        st.code(POSTER_COMMAND, language="bash")
    for name, note in POSTER_NOTES.items():
        st.caption(f"**{name}.** {note}")


def saved_answers(entries: list[dict], folders: list) -> None:
    files = answer_files(entries, folders)
    if not files:
        return
    st.subheader("Saved answers")
    for index, (system, path) in enumerate(files):
        st.download_button(f"{system}: {path.name}", path.read_bytes(), file_name=path.name, key=f"answers-{index}")


st.title("Evaluation")
st.caption("Every system on the same test cases under the same, leak-free protocols; each number says which protocol made it.")
folders = app_state.results_folders()
results = load_results(folders)
for problem in results.problems:
    st.warning(problem)
poster = poster_table()
ours, theirs = st.columns(2, gap="large")
with ours:
    st.subheader("Ours")
    if results.entries:
        st.dataframe(our_table(results.entries), hide_index=True)
        seeds = len(DataConfig().negative_seeds)
        st.caption(
            f"value [95% bootstrap interval over cases]; ± the spread over the {seeds} negative seeds of {EVAL_PROTOCOLS[1]}."
        )
    else:
        no_results(folders)
    runnable, not_yet = poster_baselines_without_results(results.entries)
    if runnable:
        st.caption(f"No results file yet for {', '.join(runnable)}: `{evaluate_command(runnable)}`.")
    if not_yet:
        st.caption(f"Not yet implemented here (in the poster's table): {', '.join(not_yet)}.")
with theirs:
    st.subheader("The poster's (as published)")
    st.dataframe(poster, hide_index=True)
    st.caption(POSTER_CAVEAT)
poster_protocol(results.entries)
st.subheader("Per metric")
for tab, metric in zip(st.tabs(METRICS), METRICS):
    with tab:
        frame = metric_frame(results.entries, metric)
        if frame.empty and metric not in POSTER_METRICS:
            st.caption(f"No {metric} figures yet.")
        else:
            st.plotly_chart(metric_figure(frame, poster, metric), key=f"metric-{metric}")
saved_answers(results.entries, folders)
