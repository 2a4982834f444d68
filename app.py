"""DUALRec's Streamlit app: `streamlit run app.py` (or `make run`). The shared sidebar, then the chosen page."""

from __future__ import annotations

import streamlit as st

from dualrec.app import state as app_state
from dualrec.app.tables import default_models, finetune_hint, model_description
from dualrec.config import paths
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
    for label, key, default in zip("AB", (app_state.MODEL_A, app_state.MODEL_B), defaults):
        spec = st.selectbox(f"Model {label}", choices, index=choices.index(default), key=key)
        st.caption(model_description(spec))
    if not any("+" in spec for spec in choices):
        st.caption(finetune_hint(paths().models))


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
