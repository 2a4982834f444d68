"""Scoring candidate answers with the real embedded model (smollm2-135m) on both local engines."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.llm import DEFAULT_PRESET, PRESETS, GenerationSettings, LLMBackend, LLMError, gguf_path, load_backend, to_messages
from dualrec.llm.openai_backend import OpenAIBackend
from dualrec.llm.scoring import (
    label_log_probs,
    labelled,
    log_likelihoods,
    log_softmax_at,
    relative_log_likelihoods,
    scoring_engine,
)
from dualrec.llm.transformers_backend import TransformersBackend

CANDIDATES = [
    "1. Toy Story (1995)",
    "1. Heat (1995)",
    "1. Titanic (1997)",
    "1. The Matrix (1999)",
    "1. Fargo (1996)",
    "1. Jumanji (1995)",
    "1. Star Wars (1977)",
    "1. Groundhog Day (1993)",
]
OBVIOUS = "Repeat exactly this line and nothing else: 1. Fargo (1996)"
HISTORY = "I watched Pulp Fiction (1994), Reservoir Dogs (1992) and Goodfellas (1990). Recommend one movie as '1. Title (Year)'."
NEUTRAL = "Recommend one movie as '1. Title (Year)'."
# Measured on these prompts: the engines differ by at most 0.8 nats per candidate (Q4_1 weights and flash attention's
# f16 sums on llama.cpp against the dequantised fp32 weights on transformers), with a correlation of at least 0.989.
ENGINE_TOLERANCE = 1.0
ENGINE_CORRELATION = 0.98


@pytest.fixture(scope="module")
def llamacpp_backend() -> Iterator[LLMBackend]:
    pytest.importorskip("llama_cpp")
    backend = load_backend(DEFAULT_PRESET, engine="llama.cpp")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def transformers_backend() -> Iterator[TransformersBackend]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small shared CPU: competing OpenMP threads are slower
    backend = load_backend(DEFAULT_PRESET, engine="transformers")
    yield backend
    backend.close()
    torch.set_num_threads(threads)


@pytest.fixture(params=["llamacpp_backend", "transformers_backend"])
def backend(request: pytest.FixtureRequest) -> LLMBackend:
    return request.getfixturevalue(request.param)


def ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values))


def few_shot_label(letter: str) -> list[dict[str, str]]:
    """A conversation whose answer is obviously '(letter)'."""
    shots = [("Write (B).", "(B)"), ("Write (E).", "(E)")]
    turns = [{"role": role, "content": text} for shot in shots for role, text in zip(("user", "assistant"), shot)]
    return turns + [{"role": "user", "content": f"Write ({letter})."}]


def from_scratch_llamacpp(prompt: list[int], candidates: list[list[int]]) -> np.ndarray:
    """Each candidate scored by a second llama.cpp model, one sequence, that keeps every token's logits: the prompt
    evaluated from scratch, then the candidate's tokens in their own batch. Flash attention, as the scoring context
    computes (the usual attention's sums differ by up to 0.7 nats), and the candidate in a batch of its own: ggml takes
    another flash-attention kernel for a batch of 64 rows or more, whose sums differ by up to 0.9 nats."""
    from llama_cpp import Llama

    reference = Llama(
        model_path=str(gguf_path(PRESETS[DEFAULT_PRESET])),
        n_ctx=1024,
        logits_all=True,
        n_threads=1,
        n_threads_batch=1,
        flash_attn=True,
        verbose=False,
    )
    sums = []
    for tokens in candidates:
        reference.reset()
        reference.eval(prompt)
        reference.eval(tokens)
        sums.append(log_softmax_at(reference.scores[len(prompt) - 1 : len(prompt) - 1 + len(tokens)], tokens).sum())
    reference.close()
    return np.array(sums)


def from_scratch_transformers(backend: TransformersBackend, prompt: list[int], candidates: list[list[int]]) -> np.ndarray:
    """Each prompt+candidate through one plain forward pass, no cache."""
    sums = []
    with torch.inference_mode():
        for tokens in candidates:
            logits = backend.model(input_ids=torch.tensor([prompt + tokens])).logits[0].numpy()
            sums.append(log_softmax_at(logits[len(prompt) - 1 : len(prompt) - 1 + len(tokens)], tokens).sum())
    return np.array(sums)


@pytest.mark.llm
def test_the_cached_scores_equal_each_prompt_and_candidate_scored_from_scratch(
    llamacpp_backend: LLMBackend, transformers_backend: TransformersBackend
) -> None:
    messages = to_messages(HISTORY)
    for backend, from_scratch in [
        (llamacpp_backend, lambda prompt, tokens: from_scratch_llamacpp(prompt, tokens)),
        (transformers_backend, lambda prompt, tokens: from_scratch_transformers(transformers_backend, prompt, tokens)),
    ]:
        engine = scoring_engine(backend)
        expected = from_scratch(engine.chat_tokens(messages), [engine.tokens(c) for c in CANDIDATES])
        np.testing.assert_allclose(log_likelihoods(backend, HISTORY, CANDIDATES), expected, atol=1e-3)


@pytest.mark.llm
def test_a_candidates_score_does_not_depend_on_the_others_in_its_batch(backend: LLMBackend) -> None:
    alone = np.array([log_likelihoods(backend, HISTORY, [candidate])[0] for candidate in CANDIDATES])
    together = log_likelihoods(backend, HISTORY, CANDIDATES)
    reversed_order = log_likelihoods(backend, HISTORY, CANDIDATES[::-1])[::-1]
    if isinstance(backend, TransformersBackend):  # one packed row: its sums run over other rows' places (fp32 noise)
        np.testing.assert_allclose(together, alone, atol=1e-3)
        np.testing.assert_allclose(reversed_order, alone, atol=1e-3)
    else:  # llama.cpp's flash attention visits a query's own cells in order, wherever they lie: exactly equal
        np.testing.assert_array_equal(together, alone)
        np.testing.assert_array_equal(reversed_order, alone)


@pytest.mark.llm
def test_the_two_engines_agree_on_tokens_and_scores(llamacpp_backend: LLMBackend, transformers_backend: LLMBackend) -> None:
    llama, hf = scoring_engine(llamacpp_backend), scoring_engine(transformers_backend)
    assert llama.chat_tokens(to_messages(HISTORY)) == hf.chat_tokens(to_messages(HISTORY))
    assert [llama.tokens(c) for c in CANDIDATES] == [hf.tokens(c) for c in CANDIDATES]
    for prompt in (HISTORY, OBVIOUS):
        on_llama, on_hf = (
            log_likelihoods(llamacpp_backend, prompt, CANDIDATES),
            log_likelihoods(transformers_backend, prompt, CANDIDATES),
        )
        assert np.abs(on_llama - on_hf).max() < ENGINE_TOLERANCE
        assert np.corrcoef(on_llama, on_hf)[0, 1] > ENGINE_CORRELATION
        assert np.corrcoef(ranks(on_llama), ranks(on_hf))[0, 1] > 0.9  # Spearman
        assert on_llama.argmax() == on_hf.argmax()
    labels_llama = label_log_probs(llamacpp_backend, few_shot_label("C"), 6)
    labels_hf = label_log_probs(transformers_backend, few_shot_label("C"), 6)
    assert np.abs(labels_llama - labels_hf).max() < ENGINE_TOLERANCE


@pytest.mark.llm
def test_the_candidate_the_prompt_makes_obvious_scores_highest(backend: LLMBackend) -> None:
    scores = log_likelihoods(backend, OBVIOUS, CANDIDATES)
    assert scores.shape == (len(CANDIDATES),) and (scores < 0).all()
    assert CANDIDATES[scores.argmax()] == "1. Fargo (1996)"
    assert np.sort(scores)[-1] - np.sort(scores)[-2] > 3  # by far


@pytest.mark.llm
def test_many_candidates_and_one_token_candidates_score_as_in_a_small_set(backend: LLMBackend) -> None:
    many = CANDIDATES * 5 + ["A"]  # more than one packed forward of transformers; a candidate of one token
    expected = np.r_[np.tile(log_likelihoods(backend, HISTORY, CANDIDATES), 5), log_likelihoods(backend, HISTORY, ["A"])]
    np.testing.assert_allclose(log_likelihoods(backend, HISTORY, many), expected, atol=1e-3)


@pytest.mark.llm
def test_relative_scores_subtract_the_neutral_prompts_and_remember_them(backend: LLMBackend) -> None:
    memo: dict[str, float] = {}
    relative = relative_log_likelihoods(backend, OBVIOUS, NEUTRAL, CANDIDATES, memo=memo)
    expected = log_likelihoods(backend, OBVIOUS, CANDIDATES) - log_likelihoods(backend, NEUTRAL, CANDIDATES)
    np.testing.assert_allclose(relative, expected, atol=1e-4)
    assert set(memo) == set(CANDIDATES)
    assert CANDIDATES[relative.argmax()] == "1. Fargo (1996)"
    memo["1. Heat (1995)"] += 100.0  # a remembered neutral value is used, not recomputed
    again = relative_log_likelihoods(backend, OBVIOUS, NEUTRAL, CANDIDATES[:2], memo=memo)
    np.testing.assert_allclose(again, relative[:2] - [0.0, 100.0], atol=1e-4)


@pytest.mark.llm
@pytest.mark.parametrize("letter", ["A", "C", "F"])
def test_the_label_scorer_reads_the_obvious_label(backend: LLMBackend, letter: str) -> None:
    scores = label_log_probs(backend, few_shot_label(letter), 6)
    assert scores.shape == (6,) and (scores < 0).all()
    assert "ABCDEF"[scores.argmax()] == letter and scores.max() > np.log(0.5)


@pytest.mark.llm
def test_label_scores_are_the_next_token_log_probabilities_after_the_prefix(transformers_backend: TransformersBackend) -> None:
    engine = scoring_engine(transformers_backend)
    prompt = engine.chat_tokens(few_shot_label("D")) + engine.tokens("(")
    with torch.inference_mode():
        logits = transformers_backend.model(input_ids=torch.tensor([prompt])).logits[0, -1].numpy()
    letters = [engine.tokens("(" + letter)[-1] for letter in "ABCD"]
    expected = log_softmax_at(np.tile(logits, (4, 1)), letters)
    np.testing.assert_allclose(label_log_probs(transformers_backend, few_shot_label("D"), 4), expected, atol=1e-4)


def test_labelled_lists_the_candidates_under_their_labels() -> None:
    assert labelled(["Heat (1995)", "Fargo (1996)"]) == "(A) Heat (1995)\n(B) Fargo (1996)"


@pytest.mark.llm
def test_generation_is_unchanged_after_scoring(backend: LLMBackend) -> None:
    greedy = GenerationSettings(max_new_tokens=12, greedy=True)
    before = backend.generate(NEUTRAL, greedy)
    log_likelihoods(backend, HISTORY, CANDIDATES)
    assert backend.generate(NEUTRAL, greedy) == before


@pytest.mark.llm
def test_scoring_waits_for_the_backends_lock(backend: LLMBackend) -> None:
    results: list[np.ndarray] = []
    worker = threading.Thread(target=lambda: results.append(log_likelihoods(backend, OBVIOUS, CANDIDATES[:2])))
    with backend._lock:
        worker.start()
        worker.join(timeout=0.5)
        assert worker.is_alive() and not results  # a generation is running: scoring waits its turn
    worker.join(timeout=60)
    assert len(results) == 1 and results[0].shape == (2,)


@pytest.mark.llm
def test_an_adapter_backend_scores_with_its_adapter_on_and_its_base_view_without(
    transformers_backend: TransformersBackend,
) -> None:
    from peft import LoraConfig, get_peft_model

    from dualrec.llm.peft_backend import AdapterBackend

    base = load_backend(DEFAULT_PRESET, engine="transformers")
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # random: it changes outputs
    adapter = AdapterBackend(get_peft_model(base.model, lora), base.tokenizer, name="with-adapter", base_name=DEFAULT_PRESET)
    plain = log_likelihoods(transformers_backend, HISTORY, CANDIDATES)
    np.testing.assert_allclose(log_likelihoods(adapter.base(), HISTORY, CANDIDATES), plain, atol=1e-3)
    assert np.abs(log_likelihoods(adapter, HISTORY, CANDIDATES) - plain).max() > 0.1
    np.testing.assert_allclose(
        label_log_probs(adapter.base(), few_shot_label("C"), 6),
        label_log_probs(transformers_backend, few_shot_label("C"), 6),
        atol=1e-3,
    )


def test_an_api_model_cannot_score() -> None:
    api = OpenAIBackend("http://127.0.0.1:9/v1", "some-model", name="some-api")  # never contacted
    for score in (lambda: log_likelihoods(api, HISTORY, CANDIDATES), lambda: label_log_probs(api, HISTORY, 3)):
        with pytest.raises(
            LLMError, match="some-api cannot score candidates: OpenAIBackend gives no log-probabilities.*needs a local model"
        ):
            score()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: log_likelihoods(b, HISTORY, []), "no candidates to score"),
        (lambda b: log_likelihoods(b, HISTORY, ["1. Heat (1995)", "  "]), "candidate 1 is blank"),
        (lambda b: label_log_probs(b, HISTORY, 0), "1 to 26 candidates"),
        (lambda b: label_log_probs(b, HISTORY, 27), r"1 to 26 candidates as \(A\)...\(Z\), not 27"),
        (lambda b: log_likelihoods(b, "movie " * 9000, CANDIDATES), "more than smollm2-135m's context of 8192"),
        (lambda b: label_log_probs(b, "movie " * 9000, 3), "more than smollm2-135m's context of 8192"),
    ],
)
@pytest.mark.llm
def test_bad_input_is_a_clear_error(backend: LLMBackend, call, message: str) -> None:
    with pytest.raises(LLMError, match=message):
        call(backend)
    assert log_likelihoods(backend, OBVIOUS, CANDIDATES[:1]).shape == (1,)  # the backend still scores


def test_labelled_refuses_more_candidates_than_labels() -> None:
    with pytest.raises(LLMError, match="not 27"):
        labelled(["Heat (1995)"] * 27)


@pytest.mark.llm
@pytest.mark.slow
def test_llama_cpps_scoring_context_follows_the_views_lora_adapter(llamacpp_backend: LLMBackend, tmp_path) -> None:
    """A GGUF LoRA (random weights, written as peft writes them) on the embedded model: the adapter view scores with it,
    the base view as the plain model, and switching back and forth gives the same scores again."""
    from dualrec.llm.gguf_lora import gguf_adapter
    from dualrec.llm.llamacpp_backend import LlamaCppAdapterBackend, load_llamacpp
    from tests.test_gguf_lora import smollm_adapter_folder

    base = gguf_path(PRESETS[DEFAULT_PRESET])
    loaded = load_llamacpp(base, name="with-adapter", lora=gguf_adapter(smollm_adapter_folder(tmp_path / "lora"), base))
    adapter = LlamaCppAdapterBackend(loaded.llama, name="with-adapter", base_name=DEFAULT_PRESET)
    plain = log_likelihoods(llamacpp_backend, HISTORY, CANDIDATES)
    with_adapter = log_likelihoods(adapter, HISTORY, CANDIDATES)
    assert np.abs(with_adapter - plain).max() > 1e-3  # the adapter changes the scores
    np.testing.assert_array_equal(log_likelihoods(adapter.base(), HISTORY, CANDIDATES), plain)
    np.testing.assert_array_equal(log_likelihoods(adapter, HISTORY, CANDIDATES), with_adapter)
    adapter.base().close()
    adapter.close()
