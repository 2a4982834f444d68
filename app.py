"""DUALRec's Streamlit app: `streamlit run app.py` (or `make run`). The shared sidebar, then the chosen page."""

from __future__ import annotations

import streamlit as st

from dualrec.app import adapter_training
from dualrec.app import state as app_state
from dualrec.app.tables import default_models, model_description
from dualrec.config import paths
from dualrec.data.dataset import Dataset
from dualrec.errors import DualrecError

st.set_page_config(page_title="DUALRec", page_icon="🎬", layout="wide")


def data_folder() -> None:
    st.text_input(
        "MovieLens 1M folder",
        value=app_state.default_data_dir(),
        key=app_state.DATA_DIR,
        help="The folder with ratings.dat, movies.dat and users.dat.",
    )


def model_pickers() -> None:
    choices = app_state.models()
    defaults = default_models(choices)
    if (switch := st.session_state.pop(adapter_training.SWITCH_B, None)) in choices:
        st.session_state[app_state.MODEL_B] = switch  # a quick adapter just trained: column B takes it
    for label, key, default in zip("AB", (app_state.MODEL_A, app_state.MODEL_B), defaults):
        spec = st.selectbox(f"Model {label}", choices, index=choices.index(default), key=key)
        st.caption(model_description(spec))
    if not any("+" in spec for spec in choices):
        hint = adapter_training.finetune_hint(paths().models, app_state.settings().data_dir, app_state.dataset_or_none())
        st.caption(hint)
    quick_adapter()


def quick_adapter() -> None:
    """The quick LoRA adapter for the sidebar's data: a button that trains it (or resumes its training), its progress."""
    dataset = app_state.dataset_or_none()
    if dataset is None:
        return
    state = adapter_training.folder_state(adapter_training.adapter_folder(dataset))
    job = adapter_training.current_job()
    if state.status == "running" or (job is not None and not job.done and job.folder == state.folder):
        adapter_progress(dataset)
        return
    finished = job is not None and job.done and job.folder == state.folder
    if finished and state.status == "completed" and st.session_state.get(adapter_training.SWITCHED) != id(job):
        st.session_state[adapter_training.SWITCHED] = id(job)  # once per training and session: the user may switch back
        st.session_state[adapter_training.SWITCH_B] = adapter_training.adapter_model(dataset)
        st.rerun()
    if finished and (error := job.error() or state.error):
        st.error(f"The adapter's training failed: {error}", icon="⚠️")
    if state.status == "completed":
        return
    if job is not None and not job.done:
        st.caption(f"An adapter is training for {job.data_dir}, not this data folder: one training at a time.")
        return
    if not adapter_training.lstm_trained():
        st.caption("The quick LoRA adapter needs the trained LSTM first (Recommend page).")
        return
    if state.checkpoint is not None:
        st.caption(f"The quick adapter's training stopped at step {state.checkpoint}; what was done is kept.")
    label = "Resume the quick LoRA adapter's training" if state.checkpoint else "Train the quick LoRA adapter now"
    st.button(
        f"{label} (about {adapter_training.MINUTES} min on a free CPU core)",
        on_click=start_adapter,
        args=(app_state.settings().data_dir, dataset),
        help=f"dualrec finetune --profile {adapter_training.PROFILE} for this data; column B switches to it when it is done.",
    )


def start_adapter(data_dir: str, dataset: Dataset) -> None:
    if problem := adapter_training.start(data_dir, dataset):
        st.warning(problem)


@st.fragment(run_every=2)
def adapter_progress(dataset: Dataset) -> None:
    """The running training's progress bar and its Cancel button; the whole app runs again when it ends."""
    state = adapter_training.folder_state(adapter_training.adapter_folder(dataset))
    job = adapter_training.current_job()
    if state.status != "running" and (job is None or job.done):
        st.rerun()
    share, text = adapter_training.progress_line(state.progress)
    st.progress(share, text=f"Training the quick LoRA adapter. {text}")
    st.button("Cancel (keeps what was done)", on_click=adapter_training.cancel, args=(dataset,), key="cancel-adapter")


def presentation() -> None:
    on = st.toggle(
        "Presentation mode",
        key=app_state.PRESENTING,
        help="Replay recorded answers at their recorded pace, offline, for the same prompt and model.",
    )
    if on:
        st.select_slider(
            "Replay speed", options=[0.5, 1.0, 2.0, 4.0], value=1.0, key=app_state.SPEED, format_func=lambda s: f"{s:g}×"
        )
    summary = st.empty()
    upload = st.file_uploader("Import recordings", type=["jsonl", "json"])
    if upload is not None:
        try:
            added = app_state.import_recordings(upload.name, upload.getvalue(), upload.file_id)
        except DualrecError as error:
            st.error(str(error))
        else:
            if added is not None:
                st.success(f"Imported {added} recordings.")
    store = app_state.recordings()
    summary.caption(f"{len(store.all())} recorded answers in {store.file.parent}")
    st.download_button(
        "Export recordings",
        app_state.export_recordings(),
        file_name="dualrec-recordings.jsonl",
        mime="application/jsonl",
        width="stretch",
    )


with st.sidebar:
    st.title("🎬 DUALRec")
    st.caption("An LSTM reads the watching order; an instruction LLM recommends in words.")
    data_folder()
    st.subheader("Models")
    model_pickers()
    st.subheader("Presentation")
    presentation()

page = st.navigation(
    [
        st.Page("app_pages/recommend.py", title="Recommend", icon="🎯", default=True),
        st.Page("app_pages/evaluation.py", title="Evaluation", icon="📊"),
        st.Page("app_pages/data.py", title="Data", icon="🗂️"),
        st.Page("app_pages/method.py", title="Method", icon="🧭"),
    ]
)
try:
    page.run()
except DualrecError as error:
    st.error(str(error))
except Exception as error:  # noqa: BLE001  (an unexpected failure is a message on stage, never a traceback)
    st.error(f"Something went wrong on this page ({type(error).__name__}: {error}). The other pages still work.")
