"""Data: MovieLens 1M as this project uses it: counts, ratings per user, the popularity long tail, genres."""

from __future__ import annotations

import streamlit as st

from dualrec.app import state as app_state
from dualrec.app.figures import genres_figure, popularity_figure, ratings_per_user_figure

st.title("Data")
dataset = app_state.dataset_or_stop()
tables = app_state.dataset_tables(dataset)
stats = tables["stats"]
st.caption(
    f"MovieLens 1M from {app_state.settings().data_dir} (md5 {stats['fingerprint'][:12]}…), split by {stats['split_mode']} "
    f"with seed {stats['split_seed']}."
)
figures = [
    ("Ratings", stats["ratings"]),
    ("Users", stats["users"]),
    ("Movies", stats["movies"]),
    ("Catalogue", stats["catalogue_size"]),
    ("Eligible users", stats["eligible_users"]),
    ("Test cases", stats["test_cases"]),
]
for cell, (name, value) in zip(st.columns(len(figures)), figures):
    cell.metric(name, f"{value:,}")
split = stats["split_users"]
st.caption(
    f"Users split {split['train']:,} / {split['val']:,} / {split['test']:,} (train / validation / test); "
    f"{stats['catalogue_ratings']:,} ratings are of catalogue movies; training windows: {stats['windows']['train']:,}."
)
left, right = st.columns(2)
left.plotly_chart(ratings_per_user_figure(tables["per_user"]), key="per-user")
right.plotly_chart(popularity_figure(tables["popularity"], stats["catalogue_size"]), key="popularity")
st.plotly_chart(genres_figure(tables["genres"]), key="genres")
