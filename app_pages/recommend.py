"""Recommend: a history (a MovieLens user, or one built by hand) -> the LSTM's pick -> the prompt -> two models live."""

from __future__ import annotations

import dataclasses
import time
import zlib

import streamlit as st

from dualrec.app import state as app_state
from dualrec.app.comparison import Column, Comparison, plan_columns, start_comparison
from dualrec.app.figures import genre_overlap_figure, topk_figure
from dualrec.app.hybrid_view import show_hybrid
from dualrec.app.imported import builder_history, matched_table, missing_table
from dualrec.app.tables import (
    MAX_HISTORY,
    HistoryChoice,
    add_movie,
    answer_rows,
    default_prompt,
    grounding_caption,
    hit_message,
    lstm_ranking,
    model_description,
    move_movie,
    movie_label,
    overlap_lists,
    prompt_caption,
    runs_locally,
    sample_test_users,
    search_catalogue,
    status_line,
    user_view,
)
from dualrec.config import LSTM_PROFILES, LSTM_QUICK_MINUTES
from dualrec.data.dataset import Dataset
from dualrec.data.genres import overlap_table
from dualrec.errors import DualrecError
from dualrec.grounding.history_import import HistoryImport, import_history
from dualrec.grounding.pipeline import Stage2Prompt, prepare_prompt
from dualrec.grounding.prompts import TEMPLATES
from dualrec.llm import GenerationSettings, split_reasoning

SOURCES = ("A MovieLens user", "Build a history")
REDRAW_S = 0.2
LOADING_NOTE = "The LSTM is still loading, so the prompt has no LSTM pick yet."
STOP_WAIT_S = 2.0


# ---- the history ---------------------------------------------------------------------------------------------------


def movielens_user(dataset: Dataset) -> HistoryChoice | None:
    users = sample_test_users(dataset)
    user_id = st.number_input("User id", value=users[0] if users else 1, step=1, key="user_id")  # a bad id is a message
    st.caption(f"Test users, whose real next movie can be revealed: {', '.join(map(str, users))}")
    try:
        view = user_view(dataset, int(user_id))
    except DualrecError as error:
        st.error(str(error), icon="👤")
        return None
    profile = view.profile
    split = f"{profile['split']} user" if profile["split"] else "not eligible for the split"
    st.markdown(f"👤 **{profile['gender']}** · **{profile['age']}** · **{profile['occupation']}** · {split}")
    later = f" and {view.hidden - 1} later ratings" if view.hidden > 1 else ""
    hidden = f"; the held-out next movie{later} hidden" if view.next_movie is not None else ""
    st.caption(
        f"User {user_id}: {len(view.history)} ratings, newest first{hidden}. The LSTM and the prompt read the last "
        f"{len(view.prompt_history)} catalogue movies."
    )
    st.dataframe(
        view.history.iloc[::-1],
        hide_index=True,
        height=260,
        column_config={
            "movie_id": None,
            "date": st.column_config.DatetimeColumn("date", format="YYYY-MM-DD"),
            "in_catalogue": st.column_config.CheckboxColumn("catalogue"),
        },
    )
    revealed = False
    if view.next_movie is not None:
        revealed = st.toggle("Reveal the movie they really watched next", key="reveal")
        if revealed:
            st.success(
                f"Next, user {user_id} watched **{movie_label(dataset.movies, view.next_movie)}** "
                f"({', '.join(dataset.movies.loc[view.next_movie, 'genres'])})."
            )
    return HistoryChoice(view.prompt_history, set(view.history["movie_id"]), view.next_movie, revealed)


def edit_history(action: str, movie_id: int, index: int = 0) -> None:
    """Button callback: add, remove or move a movie of the built history."""
    history = st.session_state.get(app_state.BUILT_HISTORY, [])
    try:
        if action == "add":
            history = add_movie(history, movie_id)
        elif action == "remove":
            history = [m for m in history if m != movie_id]
        else:
            history = move_movie(history, index, -1 if action == "up" else 1)
        st.session_state.pop("history_notice", None)
    except DualrecError as error:
        st.session_state["history_notice"] = str(error)
    st.session_state[app_state.BUILT_HISTORY] = history


def use_import(dataset: Dataset, imported: HistoryImport) -> None:
    """Keep an import and make its catalogue movies the built history."""
    st.session_state[app_state.HISTORY_IMPORT] = imported
    st.session_state[app_state.BUILT_HISTORY] = builder_history(dataset, imported)[0]
    st.session_state.pop("history_notice", None)


def choose_namesake(dataset: Dataset, line: int) -> None:
    """Selectbox callback: an ambiguous row of the import resolved to the chosen movie; the history is made again."""
    chosen = st.session_state.get(f"choose-{line}")
    if chosen is not None:
        use_import(dataset, st.session_state[app_state.HISTORY_IMPORT].choose(line, chosen))


def history_upload(dataset: Dataset) -> None:
    """The upload of a Letterboxd, IMDb or plain-list file, imported once per file, and what it matched."""
    upload = st.file_uploader(
        "Or import your own: a Letterboxd export (ratings.csv, diary.csv), an IMDb ratings export (ratings.csv) or a list "
        "of titles, one a line (.txt)",
        type=["csv", "txt"],
        key="history_file",
        help="Each row is matched to MovieLens in the file's date order; the history is its last 30 catalogue movies.",
    )
    if upload is None:
        return
    if st.session_state.get(app_state.HISTORY_FILE) != upload.file_id:
        st.session_state[app_state.HISTORY_FILE] = upload.file_id
        try:
            use_import(dataset, import_history(upload.name, upload.getvalue(), dataset))
        except DualrecError as error:
            st.session_state[app_state.HISTORY_IMPORT] = str(error)
    imported = st.session_state.get(app_state.HISTORY_IMPORT)
    if isinstance(imported, str):
        st.error(imported, icon="📄")
    elif imported is not None:
        import_report(dataset, imported)


def import_report(dataset: Dataset, imported: HistoryImport) -> None:
    """The import's summary, then its matched, ambiguous (to choose) and missing rows."""
    st.success(imported.summary(), icon="📄")
    history, outside = builder_history(dataset, imported)
    if outside:
        st.caption(f"{outside} matched movies are outside the 1,000-movie catalogue the LSTM reads: the history leaves them out.")
    counts = {"Matched": imported.matched, "Ambiguous": imported.ambiguous, "Not in MovieLens": imported.missing}
    matched, ambiguous, missing = st.tabs([f"{name} ({len(rows)})" for name, rows in counts.items()])
    matched.dataframe(matched_table(dataset, imported, history), hide_index=True, height=200)
    with ambiguous:
        for row in imported.ambiguous:
            st.selectbox(
                f"Line {row.line}: {row.written} names {len(row.choices)} movies: which one?",
                row.choices,
                index=None,
                format_func=lambda movie_id: movie_label(dataset.movies, movie_id),
                key=f"choose-{row.line}",
                on_change=choose_namesake,
                args=(dataset, row.line),
                placeholder="Choose to add it",
            )
        if not imported.ambiguous:
            st.caption("No title names several movies.")
    missing.dataframe(missing_table(imported), hide_index=True, height=200)


def built_history(dataset: Dataset) -> HistoryChoice | None:
    history_upload(dataset)
    query = st.text_input("Search the 1,000-movie catalogue", placeholder="e.g. matrix, toy story 2, godfather", key="search")
    found = search_catalogue(dataset, query)
    if query.strip() and not found:
        st.warning(f"No movie of the 1,000-movie catalogue (the movies the LSTM knows) is close to {query.strip()!r}.")
    for movie_id in found:
        genres = ", ".join(dataset.movies.loc[movie_id, "genres"])
        st.button(
            f"➕ {movie_label(dataset.movies, movie_id)} · {genres}",
            key=f"add-{movie_id}",
            on_click=edit_history,
            args=("add", movie_id),
        )
    if notice := st.session_state.get("history_notice"):
        st.warning(notice)
    history = st.session_state.setdefault(app_state.BUILT_HISTORY, [])
    if not history:
        st.info(f"The history is empty: search and add 1 to {MAX_HISTORY} movies, oldest first.", icon="➕")
        return None
    st.caption(f"{len(history)} of at most {MAX_HISTORY} movies, oldest first")
    for index, movie_id in enumerate(history):
        name, up, down, remove = st.columns([8, 1, 1, 1], vertical_alignment="center")
        name.write(f"{index + 1}. {movie_label(dataset.movies, movie_id)}")
        up.button("↑", key=f"up-{movie_id}", on_click=edit_history, args=("up", movie_id, index), disabled=index == 0)
        down.button(
            "↓", key=f"down-{movie_id}", on_click=edit_history, args=("down", movie_id, index), disabled=index == len(history) - 1
        )
        remove.button("✕", key=f"remove-{movie_id}", on_click=edit_history, args=("remove", movie_id))
    return HistoryChoice(list(history), set(history))


# ---- stage 1 -------------------------------------------------------------------------------------------------------


@st.fragment(run_every=2)
def training_progress() -> None:
    job = app_state.training_job()
    if job is None:
        return
    if job.done:
        if job.returncode == 0:
            app_state.training_finished()
            st.rerun()
        st.error("The training failed:\n\n```\n" + "\n".join(job.lines[-8:]) + "\n```")
        return
    epochs = f"epoch {job.epoch} of {job.epochs}" if job.epochs else "preparing"
    expected = f"about {LSTM_QUICK_MINUTES:g} min on 2 idle cores"
    st.progress(job.progress, text=f"Training the quick LSTM: {epochs}, {job.elapsed / 60:.1f} min so far ({expected})")
    st.code("\n".join(job.lines[-4:]) or "starting…", language=None)


def missing_lstm(note: str) -> None:
    st.warning(note, icon="🧠")
    job = app_state.training_job()
    if job is None or job.done:
        st.button(
            f"Train the quick LSTM now (about {LSTM_QUICK_MINUTES:g} min)",
            help=f"{LSTM_PROFILES['quick'].epochs} epochs; the time on 2 idle CPU cores, longer while other work shares them",
            on_click=app_state.start_training,
            args=(app_state.settings().data_dir,),
        )
    if job is not None:
        training_progress()
    st.caption("Everything else works meanwhile: the prompt then says the LSTM has no pick.")


@st.fragment(run_every=2)
def lstm_loading(dataset: Dataset) -> None:
    """The LSTM's background load, as it goes; the whole page runs again once it is loaded."""
    task = app_state.lstm_task(dataset)
    if task.done:
        st.rerun()
    st.info(
        f"Loading the LSTM in the background (TensorFlow): {task.elapsed:.0f} s so far. The history and the prompt work "
        "meanwhile; its pick joins the prompt when it is loaded.",
        icon="⏳",
    )


def lstm_pick(dataset: Dataset, history: list[int]) -> tuple[int | None, str | None, bool]:
    """Show the LSTM's top-1 and top-10; return the pick (or None and a note for the prompt) and whether the LSTM has
    loaded (False while it loads in the background)."""
    loaded = app_state.lstm(dataset)
    if loaded is None:
        lstm_loading(dataset)
        return None, LOADING_NOTE, False
    model, note = loaded
    if model is None:
        missing_lstm(note)
        return None, note, True
    ranking = lstm_ranking(dataset, model, history)
    if ranking is None:
        note = "None of these movies is among the 1,000 catalogue movies the LSTM knows, so it has no pick."
        st.warning(note)
        return None, note, True
    top = ranking.iloc[0]
    st.success(f"**LSTM top-1: {top['label']}** · {top['genres']} · {top['probability']:.1%}", icon="🧠")
    st.plotly_chart(topk_figure(ranking), key="topk")
    return int(top["movie_id"]), None, True


def hybrid_beside_lstm(dataset: Dataset, choice: HistoryChoice) -> None:
    """The hybrid's top 10 under the LSTM's, once the LSTM has loaded (dualrec.app.hybrid_view)."""
    loaded = app_state.lstm(dataset)
    if loaded is not None and loaded[0] is not None:
        models = app_state.settings().models
        show_hybrid(dataset, loaded[0], choice, models, lambda spec: app_state.shared_model(spec, 0).backend)


# ---- stage 2 -------------------------------------------------------------------------------------------------------


def the_prompt(dataset: Dataset, history: list[int], pick: int | None, note: str | None) -> Stage2Prompt:
    default, why = default_prompt(app_state.settings().models)
    left, right = st.columns([3, 1])
    template = left.selectbox(
        "Prompt template",
        TEMPLATES,
        index=TEMPLATES.index(default.template),
        key=f"template-{default.template}",
        help="poster: the poster's prompt word for word; list-k: K titles in a fixed format; full-history: the whole history",
    )
    k = right.number_input("Movies to ask for", min_value=1, max_value=20, value=default.k, key=f"k-{default.k}")
    st.caption(f"Starts as {default.template}, K {default.k}: {why}.")
    prompt = prepare_prompt(dataset, history, pick, template, int(k), note)
    with st.expander("Advanced: edit the prompt"):
        edited = st.text_area(
            "The prompt sent to both models", prompt.text, height=220, key=f"prompt-{zlib.crc32(prompt.text.encode())}"
        )
    if edited.strip() and edited != prompt.text:
        prompt = dataclasses.replace(prompt, text=edited)
        st.caption("✏️ Edited by hand")
    st.code(prompt.text, language=None, wrap_lines=True)
    return prompt


def generation_settings() -> GenerationSettings:
    with st.expander("Generation settings"):
        tokens, temperature, seed = st.columns(3)
        max_new = tokens.number_input("Max new tokens", min_value=8, max_value=2048, value=160, step=8, key="max_new_tokens")
        heat = temperature.slider("Temperature (0 = greedy)", 0.0, 1.5, 0.7, 0.05, key="temperature")
        chosen = seed.number_input(
            "Seed", min_value=0, value=0, key="seed", help="The same seed gives the same answer; column B samples with seed + 1."
        )
    return GenerationSettings(max_new_tokens=int(max_new), temperature=heat, seed=int(chosen), greedy=heat == 0)


def grounded_switch() -> bool:
    """The "Grounded answers" switch: on by default when both models run here (an API may lack guided decoding)."""
    local = all(runs_locally(spec) for spec in app_state.settings().models)
    return st.toggle(
        "Grounded answers",
        value=local,
        key=f"grounded-{local}",
        help="Each model can only write real catalogue movies the history does not hold, K different ones, one per line "
        "(constrained decoding; the genres are the movie's own). Off: free text, matched afterwards.",
    )


def start(dataset: Dataset, prompt: Stage2Prompt, settings: GenerationSettings, grounded: bool) -> None:
    if previous := st.session_state.get(app_state.COMPARISON):
        previous.stop()
    chosen, store = app_state.settings(), app_state.recordings()
    with st.spinner("Loading the models…"):
        columns = plan_columns(chosen.models, prompt.text, settings, app_state.shared_model, store, chosen.presenting, grounded)
    st.session_state[app_state.COMPARISON] = start_comparison(prompt, columns, store, chosen.speed, dataset)


def column_frame(column: Column, prompt: Stage2Prompt, speed: float) -> tuple | None:
    st.subheader(f"{column.label} · {column.spec}")
    st.caption(model_description(column.spec))
    st.caption(prompt_caption(column.spec, prompt.template, prompt.k))
    engine = column.model.backend.grounding if column.model else None
    st.caption(grounding_caption(column.grounded, engine, column.recording is not None))
    if column.error:
        st.error(column.error, icon="⚠️")
        return None
    if column.recording is not None:
        st.info(f"Replaying the answer recorded {column.recording.created} at {speed:g}×.", icon="📼")
    return st.empty(), st.container(height=300, key=f"answer-{column.label}").empty()


def follow(comparison: Comparison, frames: dict[str, tuple]) -> None:
    """Redraw each column's text and status until every stream ends (the streams run in their own threads)."""
    queued = {c.label: c.queued for c in comparison.columns}
    while True:
        finished = comparison.done
        if comparison.stopped:
            comparison.streams.wait(STOP_WAIT_S)  # a stopped worker ends within a token
        for label, (status, text) in frames.items():
            answer = comparison.answers[label]
            status.caption(status_line(answer, queued[label], comparison.stopped))
            text.markdown(answer.text or "…")
        if finished:
            return
        time.sleep(REDRAW_S)


def column_result(dataset: Dataset, comparison: Comparison, column: Column, choice: HistoryChoice) -> None:
    answer = comparison.answers[column.label]
    result = comparison.results[column.label]
    if answer.error:
        st.error(answer.error, icon="⚠️")
    if column.grounding is not None and not column.grounding.grounded:
        st.warning(column.grounding.note, icon="⚠️")
    reasoning, _ = split_reasoning(answer.text)
    if reasoning:
        with st.expander("The model's reasoning"):
            st.write(reasoning)
    first, rate, total = st.columns(3)
    first.metric("Time to first token", f"{answer.first_chunk_s:.2f} s" if answer.first_chunk_s is not None else "–")
    rate.metric("Tokens/s", f"{answer.chunks_per_s:.1f}" if answer.chunks_per_s else "–")
    total.metric("Total", f"{answer.finished_s:.1f} s" if answer.finished_s else "–")
    if result is None:
        return
    if not result.titles:
        st.warning(
            "No recognisable movie title in this answer, so nothing could be matched. Try the list-k template or more tokens.",
            icon="🔎",
        )
        return
    st.markdown("**Matched movies**")
    st.dataframe(
        answer_rows(dataset, result, choice.watched, choice.next_movie if choice.revealed else None),
        hide_index=True,
        column_order=["rank", "written", "marks", "movie", "score", "link"],
        column_config={
            "rank": st.column_config.NumberColumn("#", width=40),
            "written": st.column_config.TextColumn("written", width=160),
            "marks": st.column_config.TextColumn("marks", width=190),
            "movie": st.column_config.TextColumn("MovieLens movie", width=160),
            "score": st.column_config.NumberColumn("match", format="%.0f", width=60),
            "link": st.column_config.LinkColumn("link", display_text="open", width=50),
        },
    )
    if choice.next_movie is not None and choice.revealed:
        message = hit_message(dataset, result, choice.next_movie)
        (st.success if message.startswith("Hit") else st.info)(message)


@st.fragment(run_every=2)
def models_loading(dataset: Dataset) -> None:
    """The two models' background load, as it goes (Generate waits for it when pressed before it ends)."""
    task = app_state.preload_models(dataset)
    if task is None or task.done:
        st.rerun()
    specs = " and ".join(dict.fromkeys(app_state.settings().models))
    waiting = "after the LSTM" if not app_state.lstm_task(dataset).done else f"{task.elapsed:.0f} s so far"
    st.caption(f"⏳ Loading {specs} in the background ({waiting}).")


def models_state(dataset: Dataset) -> None:
    """Whether the sidebar's models are loaded: loading (live), loaded, or why one cannot be."""
    task = app_state.preload_models(dataset)
    if task is None:
        return
    if not task.done:
        models_loading(dataset)
        return
    failed = [column.error for column in task.result() if column.error]
    st.caption("⚠️ " + " ".join(failed) if failed else f"✅ Models loaded in {task.elapsed:.1f} s.")


def two_models(dataset: Dataset, prompt: Stage2Prompt, choice: HistoryChoice, lstm_ready: bool) -> dict:
    """The Generate and Stop controls, both columns live, then each answer's matches; returns the results by name."""
    settings = generation_settings()
    go, stop, grounding = st.columns([1, 1, 5], vertical_alignment="center")
    with grounding:
        grounded = grounded_switch()
    models_state(dataset)
    waiting = "Waits for the LSTM's pick, which is loading." if not lstm_ready else None
    if go.button("Generate", type="primary", key="generate", disabled=not lstm_ready, help=waiting):
        start(dataset, prompt, settings, grounded)
    comparison: Comparison | None = st.session_state.get(app_state.COMPARISON)
    if stop.button("Stop", key="stop", disabled=comparison is None or comparison.done) and comparison:
        comparison.stop()
    if comparison is not None and comparison.prompt.text != prompt.text:
        comparison.stop()  # the history or prompt changed: an answer to the old prompt is of no use
        del st.session_state[app_state.COMPARISON]
        comparison = None
    if comparison is None:
        st.info("Press **Generate** to stream both models' answers to this prompt side by side.", icon="▶️")
        return {}
    cells = st.columns(len(comparison.columns), border=True)
    frames = {}
    for cell, column in zip(cells, comparison.columns):
        with cell:
            if frame := column_frame(column, comparison.prompt, app_state.settings().speed):
                frames[column.label] = frame
    follow(comparison, frames)
    results = comparison.finish(dataset)
    for cell, column in zip(cells, comparison.columns):
        if column.label in results:
            with cell:
                column_result(dataset, comparison, column, choice)
    return {f"{c.label} · {c.spec}": results.get(c.label) for c in comparison.columns}


def genre_overlap(dataset: Dataset, history: list[int], pick: int | None, results: dict) -> None:
    table = overlap_table(dataset.movies, history, overlap_lists(pick, results))
    st.plotly_chart(genre_overlap_figure(table), key="genres")
    compared = table[table["list"] != "history"]
    for cell, row in zip(st.columns(max(len(compared), 1)), compared.itertuples()):
        cell.metric(f"{row.list}: cosine", f"{row.cosine:.2f}", help="Cosine similarity of the genre profiles (1 = same mix)")
        cell.metric(f"{row.list}: Jaccard", f"{row.jaccard:.2f}", help="Shared genres / all genres of the two lists")


# ---- the page ------------------------------------------------------------------------------------------------------

st.title("Recommend")
st.caption(
    "Stage 1, the LSTM, reads the order of a history; Stage 2, an instruction LLM, recommends from the prompt. Two models "
    "side by side."
)
dataset = app_state.dataset_or_stop()
app_state.lstm_task(dataset)  # the LSTM loads in the background while the page draws,
app_state.preload_models(dataset)  # then both models
left, right = st.columns([3, 2], gap="large")
with left:
    st.header("1 · History")
    source = st.segmented_control("Source", SOURCES, default=SOURCES[0], key="source", label_visibility="collapsed") or SOURCES[0]
    choice = movielens_user(dataset) if source == SOURCES[0] else built_history(dataset)
if choice is None:
    st.stop()
with right:
    st.header("2 · LSTM")
    pick, note, lstm_ready = lstm_pick(dataset, choice.history)
    hybrid_beside_lstm(dataset, choice)
st.header("3 · Prompt")
prompt = the_prompt(dataset, choice.history, pick, note)
st.header("4 · Two models")
results = two_models(dataset, prompt, choice, lstm_ready)
st.header("5 · Genre overlap")
genre_overlap(dataset, choice.history, pick, results)
