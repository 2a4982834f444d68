"""Method: the three stages, the diagram, the prompt and the evaluation protocols in plain words."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dualrec.config import EVAL_PROTOCOLS, MATCH_THRESHOLD, MATCH_YEAR_TOLERANCE, PROMPT_K, DataConfig
from dualrec.evaluation.results import POSTER_CAVEAT
from dualrec.grounding.prompts import HEADER, PICK, POSTER_HISTORY, REQUEST

DIAGRAM = Path(__file__).resolve().parents[1] / "assets" / "method.svg"
data = DataConfig()

st.title("Method")
st.caption(
    "DUALRec: a sequential model captures the order of watching; an instruction LLM reasons over titles and genres in words."
)
st.image(str(DIAGRAM), width="stretch")

stage1, stage2, stage3 = st.columns(3, border=True)
stage1.markdown(
    f"""**Stage 1 · the LSTM**

Each movie of the history is its ID embedding (128), the mean of its title-word embeddings (64) and its 18 genres.
Two LSTM layers (256, 128) with dropout read the last {data.window} movies in order; a softmax scores the
{data.catalogue_size:,} most-rated movies. Its **top-1**, among movies not yet watched, goes into the prompt."""
)
stage2.markdown(
    f"""**Stage 2 · the LLM**

The prompt holds the last {POSTER_HISTORY} movies with years and genres, and the LSTM's pick. An instruction
model answers in free text; the answer's titles are parsed and matched to MovieLens (rapidfuzz ≥ {MATCH_THRESHOLD:g},
year within {MATCH_YEAR_TOLERANCE}). Titles that match nothing are **hallucinations**."""
)
stage3.markdown(
    """**Stage 3 · LoRA fine-tuning**

From training users only: five consecutive movies and the LSTM's pick as the input, the next five movies they
really watched as the answer. A small LoRA adapter (r 8, on the attention projections) is trained on top of the
base model, and the app runs base and adapter side by side."""
)

st.subheader("The prompt (the poster's, word for word)")
lines = [
    HEADER,
    *["- <title> (<year>) (<genre>, <genre>)"] * POSTER_HISTORY,
    PICK.format(pick="<LSTM top-1 title (year)>"),
    REQUEST.format(k=PROMPT_K),
]
st.code("\n".join(lines), language=None, wrap_lines=True)

st.subheader("How we score, in plain words")
low, mid, high = (f"{share:.0%}" for share in data.split_fractions)
st.markdown(
    f"""- **Split by user** ({low} / {mid} / {high}, seed {data.split_seed}): nobody's movies are in two splits. Each
  test user is one case: their last {data.window} catalogue movies, and the movie they really watched next.
- **full**: where the real next movie ranks among all {data.catalogue_size:,} catalogue movies, movies already
  watched left out. The hardest and most honest score.
- **{EVAL_PROTOCOLS[1]}**: where it ranks among itself and {data.negatives} random movies the user never rated
  ({len(data.negative_seeds)} seeds): the poster's protocol for its baselines. Guessing gives HR@5 =
  {5 / (data.negatives + 1):.2f}.
- **free-form (LLM)**: the answer's matched movies, in order, are the ranking; unmatched titles count as
  hallucinations. No answer is ever fed back into any step.
- **HR@k**: share of cases whose next movie is in the top k. **NDCG@k** also rewards ranking it higher.
  Every figure comes with a 95% bootstrap interval over cases."""
)
st.info(POSTER_CAVEAT, icon="ℹ️")
