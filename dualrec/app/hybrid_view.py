"""The Recommend page's hybrid (issue 13): the LSTM's top N re-ranked by a local LLM, shown beside the LSTM's top 10.

`start_hybrid` runs the re-ranking in a worker thread (`HybridRun`: a progress fraction and message, the result or a
one-line error, stoppable between chunks of candidates); `hybrid_table` and `moves_figure` show it: each candidate's
LSTM probability, LLM score and move, and a plotly chart of how the order moves; `target_places` says where a
revealed test user's real next movie sits in each ranking. `show_hybrid` is the page's view of all this.
Bad input never raises into the page: a history without a catalogue movie, an API model (no log-probabilities), a
candidate count outside 1..1000 or a missing adapter is the run's error, and the LSTM's ranking stays on the page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dualrec.app.figures import ACCENT, MUTED, _layout
from dualrec.app.tables import movie_label
from dualrec.data.dataset import PAD_ITEM, Dataset
from dualrec.errors import ConfigError, DualrecError
from dualrec.llm import LLMBackend
from dualrec.ranking.hybrid import RECOMMEND_WEIGHT, SCORERS, HybridOptions, HybridRecommender, Reranked

SHOWN = 10  # the hybrid's top 10 beside the LSTM's
CHUNK = 5  # likelihood: candidates scored between two progress updates (and stop checks)
RUN = "hybrid_run"  # session-state key of the page's HybridRun
SCORER_HELP = (
    "likelihood: each title's log-likelihood after the history minus after a neutral prompt; labels: the candidates "
    "listed (A)...(T), each letter's probability"
)


@dataclass
class HybridRun:
    """One re-ranking in a worker thread; the page reads it on each rerun."""

    key: tuple  # what it re-ranks: (history, model, scorer, candidates, weight)
    stop_event: threading.Event = field(default_factory=threading.Event)
    progress: float = 0.0
    message: str = "starting…"
    result: Reranked | None = None
    error: str | None = None
    done: bool = False

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()


def start_hybrid(
    dataset: Dataset,
    lstm,
    history: Sequence[int],
    spec: str,
    scorer: str,
    candidates: int,
    weight: float,
    load: Callable[[str], LLMBackend],
) -> HybridRun:
    """Re-rank the LSTM's top `candidates` after a history of movie ids with the LLM `spec` (loaded by `load`), off the
    caller's thread."""
    run = HybridRun((tuple(history), spec, scorer, candidates, weight))
    worker = threading.Thread(
        target=_rerank, args=(run, dataset, lstm, history, spec, scorer, candidates, weight, load), daemon=True, name="hybrid"
    )
    worker.start()
    return run


def _rerank(run: HybridRun, dataset: Dataset, lstm, history, spec, scorer, candidates, weight, load) -> None:
    try:
        options = HybridOptions(llm=spec, scorer=scorer, candidates=candidates)
        items = [int(item) for item in dataset.item_of(list(history)) if item >= 0]
        if not items:
            raise DualrecError("None of these movies is among the catalogue movies the LSTM knows, so it proposes no candidates.")
        run.message = f"loading {spec}…"
        hybrid = HybridRecommender(options, lstm=lstm, backend=load(spec))
        hybrid.ready(dataset)
        hybrid.weight = weight
        run.result = rerank_in_steps(hybrid, dataset, items, run)
    except (ConfigError, DualrecError) as error:
        run.error = str(error).removeprefix("Invalid hybrid options: ")
    except Exception as error:  # a failing model must not take the page down
        run.error = f"{type(error).__name__}: {error}"
    finally:
        run.done = True


def rerank_in_steps(hybrid: HybridRecommender, dataset: Dataset, items: list[int], run: HybridRun) -> Reranked | None:
    """`HybridRecommender.rerank`, the likelihood scorer's candidates scored CHUNK at a time (progress, stop checks);
    None when stopped."""
    lstm = hybrid.ready_lstm()
    proposed = lstm.top_k(np.asarray(items, dtype=np.int32), hybrid.depth)
    window = np.asarray(items, dtype=np.int32)[-lstm.window :]
    history = np.r_[np.full(lstm.window - len(window), PAD_ITEM), window].astype(np.int32)
    steps = [proposed.items] if hybrid.scorer == "labels" else np.array_split(proposed.items, -(-len(proposed.items) // CHUNK))
    llm = []
    for done, step in enumerate(steps):
        if run.stopped:
            return None
        first, last = sum(map(len, steps[:done])) + 1, sum(map(len, steps[: done + 1]))
        run.message = f"{hybrid.settings.llm}: scoring candidates {first} to {last} of {len(proposed.items)}"
        llm.append(hybrid.case_scores(dataset, history, step))
        run.progress = (done + 1) / len(steps)
    llm_scores = np.concatenate(llm)
    with np.errstate(divide="ignore"):
        scores = np.log(proposed.probabilities.astype(np.float64)) + hybrid.weight * llm_scores
    order = np.argsort(-scores, kind="stable")
    return Reranked(
        proposed.items[order], proposed.probabilities[order], llm_scores[order], scores[order], order + 1, hybrid.weight
    )


def hybrid_table(dataset: Dataset, reranked: Reranked, next_movie: int | None = None, k: int = SHOWN) -> pd.DataFrame:
    """The hybrid's top k: rank, movie, its LSTM rank and move, LSTM probability, LLM score, fused score, and a mark
    on the real next movie when it is given."""
    movie_ids = dataset.catalogue[reranked.items[:k]]
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(movie_ids) + 1),
            "movie": [movie_label(dataset.movies, int(m)) for m in movie_ids],
            "LSTM rank": reranked.lstm_ranks[:k],
            "move": [f"{change:+d}" if change else "=" for change in reranked.lstm_ranks[:k] - np.arange(1, len(movie_ids) + 1)],
            "LSTM p": reranked.lstm_probabilities[:k].astype(float),
            "LLM score": reranked.llm_scores[:k],
            "score": reranked.scores[:k],
            "next": ["🎯" if int(m) == next_movie else "" for m in movie_ids],
        }
    )


def moves_figure(dataset: Dataset, reranked: Reranked, k: int = SHOWN) -> go.Figure:
    """A line per candidate from its LSTM rank to its hybrid rank (the top N both ways, best at the top); the
    candidates that end in the hybrid's top k are drawn in colour and named."""
    figure = go.Figure()
    for rank, (item, lstm_rank) in enumerate(zip(reranked.items, reranked.lstm_ranks), start=1):
        label = movie_label(dataset.movies, int(dataset.catalogue[item]))
        shown = rank <= k
        figure.add_trace(
            go.Scatter(
                x=["LSTM", "hybrid"],
                y=[int(lstm_rank), rank],
                mode="lines+markers+text" if shown else "lines+markers",
                text=["", label] if shown else None,
                textposition="middle right",
                line={"color": ACCENT if lstm_rank != rank and shown else MUTED, "width": 2 if shown else 1},
                hovertext=label,
                showlegend=False,
            )
        )
    figure.update_yaxes(autorange="reversed", title="rank", dtick=1 if len(reranked.items) <= 20 else None)
    figure.update_xaxes(range=[-0.2, 2.2])
    return _layout(figure, f"How the LLM moves the LSTM's top {len(reranked.items)}", height=120 + 22 * len(reranked.items))


def target_places(
    dataset: Dataset, lstm, history: Sequence[int], reranked: Reranked, next_movie: int
) -> tuple[int | None, int | None]:
    """Where the real next movie sits in the LSTM's ranking and in the hybrid's (the rest keep the LSTM's order below
    the top N); None when it is not a catalogue movie or the history holds it."""
    item = int(dataset.item_of([next_movie])[0])
    items = [int(i) for i in dataset.item_of(list(history)) if i >= 0]
    if item < 0 or item in items:
        return None, None
    ranking = lstm.top_k(np.asarray(items, dtype=np.int32), dataset.catalogue_size)
    lstm_place = int(np.flatnonzero(ranking.items == item)[0]) + 1
    inside = np.flatnonzero(reranked.items == item)
    return lstm_place, int(inside[0]) + 1 if len(inside) else lstm_place


# ---- the page's view -----------------------------------------------------------------------------------------------


def show_hybrid(dataset: Dataset, lstm, choice, models: Sequence[str], load: Callable[[str], LLMBackend]) -> None:
    """The hybrid's controls, its progress while it runs, then its top 10 and the chart (Streamlit)."""
    st.subheader("Hybrid: the LLM re-ranks the LSTM's top N")
    spec_cell, scorer_cell, count_cell, weight_cell = st.columns([3, 2, 1, 1])
    spec = spec_cell.selectbox("LLM", list(dict.fromkeys(models)), key="hybrid_llm")
    scorer = scorer_cell.selectbox(
        "Scorer",
        SCORERS,
        key="hybrid_scorer",
        help=SCORER_HELP,
    )
    candidates = count_cell.number_input("N", min_value=1, max_value=1000, value=20, key="hybrid_candidates")
    weight = weight_cell.number_input("w", min_value=0.0, value=RECOMMEND_WEIGHT, step=0.25, key="hybrid_weight")
    key = (tuple(choice.history), spec, scorer, int(candidates), float(weight))
    go_cell, stop_cell, _ = st.columns([1, 1, 4])
    current: HybridRun | None = st.session_state.get(RUN)
    if go_cell.button("Re-rank", key="hybrid_go"):
        if current is not None:
            current.stop()
        current = st.session_state[RUN] = start_hybrid(
            dataset, lstm, choice.history, spec, scorer, int(candidates), float(weight), load
        )
    if stop_cell.button("Stop", key="hybrid_stop", disabled=current is None or current.done) and current is not None:
        current.stop()
    if current is None or current.key != key:
        st.caption(
            "log p_LSTM + w · s_LLM over the LSTM's top N; press **Re-rank** (the LLM reads the last movies of the history)."
        )
        return
    hybrid_progress(dataset, lstm, choice, current)


@st.fragment(run_every=1)
def running(run: HybridRun) -> None:
    """The progress bar, redrawn every second; the whole page again once the run has ended."""
    if run.done:
        st.rerun()
    st.progress(run.progress, text="Stopping…" if run.stopped else run.message)


def hybrid_progress(dataset: Dataset, lstm, choice, run: HybridRun) -> None:
    """A running re-ranking's progress, or its error, or the hybrid's top 10 beside the LSTM's with the chart."""
    if not run.done:
        running(run)
        return
    if run.error:
        st.error(f"The hybrid could not run: {run.error} The LSTM's ranking above stands alone.", icon="⚠️")
        return
    if run.result is None:
        st.info("Stopped: no hybrid ranking. Press **Re-rank** to start again.", icon="⏹️")
        return
    next_movie = choice.next_movie if choice.revealed else None
    st.dataframe(
        hybrid_table(dataset, run.result, next_movie),
        hide_index=True,
        column_config={
            "LSTM p": st.column_config.NumberColumn(format="%.4f"),
            "LLM score": st.column_config.NumberColumn(format="%.2f"),
            "score": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    if next_movie is not None:
        lstm_place, hybrid_place = target_places(dataset, lstm, choice.history, run.result, next_movie)
        if lstm_place is None:
            st.info("The real next movie is not a catalogue movie (or is in the history): neither ranking can hold it.")
        else:
            title = movie_label(dataset.movies, next_movie)
            st.info(f"The real next movie, {title}: LSTM rank {lstm_place}, hybrid rank {hybrid_place}.", icon="🎯")
    st.plotly_chart(moves_figure(dataset, run.result), key="hybrid_moves")
