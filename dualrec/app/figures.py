"""The app's plotly figures, built from the plain tables of dualrec.app.tables and dualrec.data.genres."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from dualrec.config import GENRES

ACCENT = "#c0392b"  # the theme's primary colour: the LSTM's top-1, our rows
MUTED = "#95a5a6"
PALETTE = ["#34495e", "#c0392b", "#2980b9", "#27ae60", "#8e44ad", "#d35400"]
MARGINS = {"l": 10, "r": 10, "t": 40, "b": 10}


def _layout(figure: go.Figure, title: str, height: int = 360) -> go.Figure:
    figure.update_layout(title=title, height=height, margin=MARGINS, legend={"orientation": "h", "y": -0.2})
    return figure


def topk_figure(ranking: pd.DataFrame) -> go.Figure:
    """The LSTM's top k as horizontal bars of probability, best at the top, the top-1 highlighted."""
    colours = [ACCENT if rank == 1 else MUTED for rank in ranking["rank"]]
    figure = go.Figure(
        go.Bar(
            x=ranking["probability"],
            y=ranking["label"],
            orientation="h",
            marker_color=colours,
            text=[f"{p:.1%}" for p in ranking["probability"]],
            textposition="auto",
            hovertext=ranking["genres"],
        )
    )
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(title="probability", tickformat=".0%")
    return _layout(figure, f"LSTM: top {len(ranking)} next movies", height=60 + 28 * len(ranking))


def genre_overlap_figure(overlap: pd.DataFrame) -> go.Figure:
    """Grouped bars: each list's share of each genre (genres absent from every list left out)."""
    shown = [g for g in GENRES if overlap[g].sum() > 0]
    figure = go.Figure(
        [
            go.Bar(
                name=f"{row['list']} ({row['movies']})",
                x=shown,
                y=[row[g] for g in shown],
                marker_color=PALETTE[i % len(PALETTE)],
            )
            for i, (_, row) in enumerate(overlap.iterrows())
        ]
    )
    figure.update_layout(barmode="group")
    figure.update_yaxes(title="share of genre labels", tickformat=".0%")
    return _layout(figure, "Genre profile: history vs LSTM pick vs each model's movies", height=400)


def ratings_per_user_figure(counts: pd.Series) -> go.Figure:
    figure = go.Figure(go.Histogram(x=counts, nbinsx=80, marker_color=PALETTE[0]))
    figure.update_xaxes(title="ratings per user")
    figure.update_yaxes(title="users", type="log")
    return _layout(figure, f"Ratings per user (median {int(counts.median())}, max {int(counts.max())})")


def popularity_figure(popularity: pd.DataFrame, catalogue_size: int) -> go.Figure:
    """The long tail: ratings per movie by popularity rank, with the catalogue cut-off and the share it keeps."""
    inside = popularity[popularity["in_catalogue"]]
    outside = popularity[~popularity["in_catalogue"]]
    figure = go.Figure(
        [
            go.Scatter(x=inside["rank"], y=inside["ratings"], mode="lines", name="in the catalogue", line_color=ACCENT),
            go.Scatter(x=outside["rank"], y=outside["ratings"], mode="lines", name="left out", line_color=MUTED),
        ]
    )
    kept = popularity["cumulative_share"].iloc[min(catalogue_size, len(popularity)) - 1]
    figure.add_vline(
        x=catalogue_size, line_dash="dash", annotation_text=f"cut-off: top {catalogue_size:,} keep {kept:.0%} of ratings"
    )
    figure.update_xaxes(title="movies by number of ratings (rank)")
    figure.update_yaxes(title="ratings", type="log")
    return _layout(figure, "Popularity long tail and the catalogue cut-off")


def genres_figure(genres: pd.DataFrame) -> go.Figure:
    figure = go.Figure(
        [
            go.Bar(name="all movies", x=genres["genre"], y=genres["movies"], marker_color=MUTED),
            go.Bar(name="catalogue movies", x=genres["genre"], y=genres["catalogue_movies"], marker_color=ACCENT),
        ]
    )
    figure.update_layout(barmode="group")
    figure.update_yaxes(title="movies")
    return _layout(figure, "Genres of all movies and of the catalogue")


def metric_figure(ours: pd.DataFrame, poster: pd.DataFrame, metric: str) -> go.Figure:
    """One metric: our rows with their intervals (one colour per protocol) beside the poster's rows (grey); a system
    of both tables ("fpmc", "FPMC") shares one place on the axis, and a system that several files measured under one
    protocol gets a place per file (bars of one place would stack)."""
    spelling = {name.casefold(): name for name in poster["system"]}
    traces = []
    for i, (protocol, rows) in enumerate(ours.groupby("protocol", sort=False)):
        error = {
            "type": "data",
            "symmetric": False,
            "array": rows["high"] - rows["value"],
            "arrayminus": rows["value"] - rows["low"],
        }
        repeated = rows["system"].duplicated(keep=False)
        systems = [
            f"{name} · {Path(file).stem}" if again else spelling.get(name.casefold(), name)
            for name, file, again in zip(rows["system"], rows["file"], repeated)
        ]
        traces.append(
            go.Bar(name=f"ours: {protocol}", x=systems, y=rows["value"], error_y=error, marker_color=PALETTE[i % len(PALETTE)])
        )
    if metric in poster:
        traces.append(go.Bar(name="poster (as published)", x=poster["system"], y=poster[metric], marker_color=MUTED))
    figure = go.Figure(traces)
    figure.update_yaxes(title=metric, rangemode="tozero")
    return _layout(figure, f"{metric}: ours (95% CI) beside the poster's", height=420)
