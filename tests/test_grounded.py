"""Grounded answers: the prefix tree and its grammar, the catalogue constraint, the engines that can only write real,
unwatched, distinct catalogue movies (llama.cpp, transformers, a server's guided decoding), and what happens where an
engine or server cannot ground (a free answer that says so), in the pipeline, the CLI and the app."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.app import state as app_state
from dualrec.app.comparison import SharedModel, plan_columns, start_comparison
from dualrec.app.recordings import RecordingStore
from dualrec.cli import main
from dualrec.errors import DualrecError
from dualrec.evaluation import LLMAnswers, evaluate
from dualrec.grounding.grounded import answer_constraint, catalogue_choices
from dualrec.grounding.pipeline import Stage2Result, prepare_prompt, run_stage2, user_history
from dualrec.grounding.prompts import format_answer
from dualrec.llm import GenerationSettings, LLMBackend, Message, load_backend
from dualrec.llm.constraint import (
    AnswerConstraint,
    Choice,
    ChoiceSet,
    GroundingError,
    PrefixTree,
    TokenWalker,
    nucleus,
    pick_token,
    write_lines,
)
from dualrec.llm.transformers_backend import GroundedLines
from tests.llm_fixtures import fake_openai
from tests.test_app_pages import app_env, generate, run, texts  # noqa: F401  (the app's fixture and helpers)
from tests.test_llm_http import llamacpp_server  # noqa: F401  (the real llama.cpp server fixture)
from tests.test_llm_local import llamacpp_backend, transformers_backend  # noqa: F401  (the embedded model's fixtures)

GREEDY = GenerationSettings(greedy=True)
TITLES = [" The Mask (1994)", " The Matrix (1999)", " Toy Story (1995)", " Toy Story 2 (1999)"]


class FreeBackend(LLMBackend):
    """An engine without constrained decoding: it always streams the same free text."""

    def __init__(self, text: str) -> None:
        super().__init__("free")
        self.text = text

    def _stream(self, messages: list[Message], settings: GenerationSettings, stop: threading.Event) -> Iterator[str]:
        yield self.text


class FirstChoiceBackend(FreeBackend):
    """A grounding engine for the app's tests: each line is the first choice still allowed."""

    grounding = "first choice"

    def _stream_grounded(
        self, messages: list[Message], settings: GenerationSettings, stop: threading.Event, constraint: AnswerConstraint
    ) -> Iterator[str]:
        def first_left(answer: str, used: frozenset[int]) -> Iterator[str]:
            left = (c for i, c in enumerate(constraint.choices.choices) if i not in constraint.excluded | used)
            yield next(left).text

        return write_lines(constraint, first_left, stop)


def test_shared_prefixes_are_written_once_in_the_grammar() -> None:
    tree = PrefixTree(TITLES)
    assert tree.gbnf() == 'root ::= " T" ("he Ma" ("sk (1994)" | "trix (1999)") | "oy Story " ("(1995)" | "2 (1999)"))\n'
    assert tree.gbnf({0, 3}) == 'root ::= " T" ("he Ma" "trix (1999)" | "oy Story " "(1995)")\n'


def test_a_choice_that_is_the_prefix_of_another_may_end_there_and_literals_are_escaped() -> None:
    tree = PrefixTree([' "Heat" (1995)', ' "Heat" (1995) \\ 2 (1999)'])
    assert tree.gbnf() == 'root ::= " \\"Heat\\" (1995)" (" \\\\ 2 (1999)")?\n'
    assert tree.gbnf({1}) == 'root ::= " \\"Heat\\" (1995)"\n'
    with pytest.raises(GroundingError, match="every choice is excluded"):
        tree.gbnf({0, 1})


def test_a_repeated_or_unknown_line_is_refused() -> None:
    constraint = AnswerConstraint(ChoiceSet([Choice(text) for text in TITLES]), k=2)
    lines = iter([" Toy Story (1995)", " Toy Story (1995)"])
    with pytest.raises(GroundingError, match="line 2 is 'Toy Story \\(1995\\)', which is not an allowed choice"):
        list(write_lines(constraint, lambda answer, used: iter([next(lines)]), threading.Event()))


def test_the_constraint_writes_the_answer_format_and_excludes_the_history(dataset) -> None:
    history = dataset.catalogue[:40].tolist()
    constraint = answer_constraint(dataset, history, 5)
    choices, position = catalogue_choices(dataset)
    assert constraint.excluded == {position[m] for m in history} and constraint.lines == 5
    for movie_id in dataset.catalogue[:50].tolist():
        choice = choices.choices[position[movie_id]]
        assert constraint.head(1) + choice.text + choice.suffix == format_answer(dataset.movies, [movie_id])
    assert catalogue_choices(dataset)[0] is choices  # built once per catalogue


def test_every_catalogue_movie_watched_is_one_clear_message_and_fewer_left_than_k_gives_fewer_lines(dataset) -> None:
    with pytest.raises(DualrecError, match="Every one of the 1,000 catalogue movies is in this history"):
        answer_constraint(dataset, dataset.catalogue.tolist(), 3)
    assert answer_constraint(dataset, dataset.catalogue[:-2].tolist(), 10).lines == 2


def test_allowed_movies_restrict_the_answer_to_a_candidate_set(dataset) -> None:
    candidates, history = dataset.catalogue[:20].tolist(), dataset.catalogue[15:40].tolist()
    constraint = answer_constraint(dataset, history, 10, allowed=candidates)
    choices, position = catalogue_choices(dataset)
    assert constraint.available == 15 and set(range(len(choices))) - constraint.excluded == {position[m] for m in candidates[:15]}
    prompt = prepare_prompt(dataset, history, None, "list-k", 10)
    result = run_stage2(dataset, FirstChoiceBackend(""), prompt, grounded=True, allowed=candidates)
    assert result.recommended == candidates[:10]
    with pytest.raises(DualrecError, match="Every one of the 5 allowed movies is in this history"):
        answer_constraint(dataset, history, 3, allowed=candidates[15:])
    with pytest.raises(DualrecError, match="not in the catalogue: \\[999999\\]"):
        answer_constraint(dataset, history, 3, allowed=[999999])


CHARACTER_TEXTS = [*TITLES, " Heat (1995)", " Heat (1995) 2 (1999)"]  # the second starts with the first
CHARACTERS = sorted({c for text in CHARACTER_TEXTS for c in text} | set("0123456789.[]\n "))


def character_tokens(text: str) -> list[int]:
    """One token per character of CHARACTERS; token 0 ends the answer."""
    return [CHARACTERS.index(c) + 1 for c in text]


def character_setting(excluded: int) -> tuple[AnswerConstraint, PrefixTree]:
    """4 distinct lines of CHARACTER_TEXTS but the excluded one, and the texts' token tree."""
    choices = ChoiceSet([Choice(text, f" [{i}]") for i, text in enumerate(CHARACTER_TEXTS)])
    constraint = AnswerConstraint(choices, k=4, excluded=frozenset({excluded}))
    return constraint, PrefixTree([tuple(character_tokens(text)) for text in CHARACTER_TEXTS])


@pytest.mark.parametrize("seed", range(5))
def test_the_token_processor_only_lets_allowed_distinct_lines_through(seed: int) -> None:
    """GroundedLines driven by random logits over a one-character-per-token vocabulary (token 0 ends the answer)."""
    texts, vocabulary = CHARACTER_TEXTS, CHARACTERS
    processor = GroundedLines(*character_setting(excluded=1), character_tokens, end=0)
    generator, ids = torch.Generator().manual_seed(seed), torch.zeros((1, 1), dtype=torch.long)
    while ids.shape[1] == 1 or ids[0, -1] != 0:
        scores = processor(ids, torch.rand((1, len(vocabulary) + 1), generator=generator))
        ids = torch.cat([ids, scores.argmax(dim=1, keepdim=True)], dim=1)
    answer = "".join(vocabulary[t - 1] for t in ids[0, 1:-1].tolist())
    lines = answer.split("\n")
    written = [line.partition(".")[2].rpartition(" [")[0] for line in lines]
    assert [line.partition(".")[0] for line in lines] == ["1", "2", "3", "4"]
    assert len(set(written)) == 4 and set(written) <= set(texts) - {texts[1]}
    assert all(line.endswith(f" [{texts.index(w)}]") for line, w in zip(lines, written))


@pytest.mark.parametrize(("seed", "temperature"), [(0, 0.0), (1, 0.7), (2, 1.5), (3, 5.0)])
def test_our_token_decoder_picks_only_allowed_tokens_and_writes_distinct_allowed_lines(seed: int, temperature: float) -> None:
    """TokenWalker and pick_token as the llama.cpp backend drives them, on random logits over a one-character-per-token
    vocabulary (token 0 ends the answer): greedy and sampled, every pick allowed, the answer K distinct allowed lines."""
    texts, vocabulary = CHARACTER_TEXTS, CHARACTERS
    walker = TokenWalker(*character_setting(excluded=2), character_tokens, end=0)
    rng, logits = np.random.default_rng(seed), np.random.default_rng(seed + 100)
    written = []
    while (allowed := walker.allowed()) != [0]:
        token = pick_token(logits.normal(size=len(vocabulary) + 1), allowed, temperature, 0.9, rng)
        assert token in allowed
        walker.advance(token)
        written.append(vocabulary[token - 1])
    lines = "".join(written).split("\n")
    chosen = [line.partition(".")[2].rpartition(" [")[0] for line in lines]
    assert [line.partition(".")[0] for line in lines] == ["1", "2", "3", "4"]
    assert len(set(chosen)) == 4 and set(chosen) <= set(texts) - {texts[2]}
    assert all(line.endswith(f" [{texts.index(c)}]") for line, c in zip(lines, chosen))


def test_pick_token_is_the_allowed_argmax_greedy_and_samples_the_allowed_nucleus() -> None:
    logits = np.array([9.0, 1.0, 3.0, 2.9, 0.0])
    assert pick_token(logits, [1, 2, 3], 0.0, 0.95, np.random.default_rng(0)) == 2
    assert pick_token(logits, [1, 2, 3], 0.7, 0.95, None) == 2  # no generator: greedy
    draws = [pick_token(logits, [1, 2, 3, 4], 1.0, 0.9, np.random.default_rng(seed)) for seed in range(300)]
    assert set(draws) == {2, 3}  # tokens 1 and 4 lie outside the 0.9 nucleus (softmax 0.06 and 0.02)
    assert {pick_token(logits, [1, 2, 3, 4], 1.0, 1.0, np.random.default_rng(seed)) for seed in range(1000)} == {1, 2, 3, 4}


def test_an_engine_that_cannot_ground_gives_a_free_answer_that_says_so(dataset) -> None:
    prompt = prepare_prompt(dataset, dataset.catalogue[:5].tolist(), None, "list-k", 3)
    result = run_stage2(dataset, FreeBackend("1. Toy Story (1995)"), prompt, grounded=True)
    assert result.answer == "1. Toy Story (1995)" and not result.grounding.grounded
    assert (
        result.as_dict()["grounding"]
        == "NOT grounded, a free answer: free cannot ground its answers: FreeBackend has no constrained decoding"
    )
    assert run_stage2(dataset, FreeBackend("x"), prompt).as_dict()["grounded"] is False


def http_backend(base_url: str) -> LLMBackend:
    return load_backend("custom", base_url=base_url, model="fake")


def test_a_server_that_answers_each_line_under_the_grammar_is_grounded(dataset) -> None:
    toy, alien = 8, 6  # "Toy Story (1995)", "Alien³ (1992)": catalogue movies, not in this history
    history = [m for m in dataset.catalogue[:5].tolist() if m not in (toy, alien)]
    prompt = prepare_prompt(dataset, history, None, "list-k", 2)
    with fake_openai([" Toy Story (1995)"], [" Alien³ (1992)"]) as server:
        result = run_stage2(dataset, http_backend(server.base_url), prompt, GREEDY, grounded=True)
    assert result.answer == format_answer(dataset.movies, [toy, alien]) and result.grounding.grounded
    choices, position = catalogue_choices(dataset)
    constraint = answer_constraint(dataset, history, 2)
    first, second = (body for _, body in server.requests)
    assert first["guided_grammar"] == first["grammar"] == constraint.gbnf()
    assert second["grammar"] == constraint.gbnf({position[toy]}) and second["continue_final_message"] is True
    assert second["messages"][-1] == {"role": "assistant", "content": format_answer(dataset.movies, [toy]) + "\n2."}


@pytest.mark.parametrize(
    ("first_reply", "says"),
    [(400, "refused guided decoding \\(.*HTTP 400"), (["Made Up Movie (2020)"], "ignored the guided-decoding request")],
)
def test_a_server_that_refuses_or_ignores_guided_decoding_gives_a_free_answer_that_says_so(dataset, first_reply, says) -> None:
    prompt = prepare_prompt(dataset, dataset.catalogue[:5].tolist(), None, "list-k", 3)
    with fake_openai(first_reply, ["1. Toy Story (1995)"]) as server:
        result = run_stage2(dataset, http_backend(server.base_url), prompt, GREEDY, grounded=True)
    assert result.answer == "1. Toy Story (1995)" and not result.grounding.grounded
    assert result.grounding.note.startswith("NOT grounded, a free answer: custom: http://")
    assert re.search(says, result.grounding.note)
    assert "grammar" not in server.requests[-1][1]  # the free answer is asked without a grammar


def check_grounded(dataset, result: Stage2Result, k: int) -> None:
    """Every line a catalogue movie matched by the project's matcher, none watched, none repeated, K lines."""
    assert result.grounding.grounded
    matched = [title.movie_id for title in result.titles]
    assert len(result.titles) == k and None not in matched and result.hallucinations == 0
    assert len(set(matched)) == k and not set(matched) & set(result.prompt.history)
    assert set(matched) <= set(dataset.catalogue.tolist())
    assert result.answer == format_answer(dataset.movies, result.recommended)


def fixture_prompts(dataset, k: int, users: int):
    return [
        prepare_prompt(dataset, user_history(dataset, int(u)), None, "list-k", k) for u in dataset.split_users["test"][:users]
    ]


@pytest.mark.llm
@pytest.mark.parametrize(("engine", "k", "users"), [("llama.cpp", 5, 3), ("transformers", 3, 2)])
def test_greedy_grounded_answers_are_real_unwatched_distinct_movies(dataset, request, engine, k, users) -> None:
    backend = request.getfixturevalue(f"{engine.replace('.', '')}_backend")
    for prompt in fixture_prompts(dataset, k, users):
        result = run_stage2(dataset, backend, prompt, GREEDY, grounded=True)
        check_grounded(dataset, result, k)
        assert result.grounding.note.startswith(engine)


@pytest.mark.llm
def test_sampled_grounded_answers_on_llamacpp_are_valid_and_repeat_with_their_seed(dataset, llamacpp_backend) -> None:  # noqa: F811
    prompt = fixture_prompts(dataset, 5, 1)[0]
    answers = []
    for seed in (3, 3, 4):
        result = run_stage2(dataset, llamacpp_backend, prompt, GenerationSettings(temperature=1.0, seed=seed), grounded=True)
        check_grounded(dataset, result, 5)
        answers.append(result.answer)
    assert answers[0] == answers[1] and answers[0] != answers[2]


@pytest.mark.llm
def test_a_grounded_answer_on_llamacpp_picks_only_from_the_allowed_candidates(dataset, llamacpp_backend) -> None:  # noqa: F811
    prompt = fixture_prompts(dataset, 5, 1)[0]
    candidates = [m for m in dataset.catalogue.tolist() if m not in prompt.history][-20:]
    result = run_stage2(dataset, llamacpp_backend, prompt, GREEDY, grounded=True, allowed=candidates)
    check_grounded(dataset, result, 5)
    assert set(result.recommended) <= set(candidates)


@pytest.mark.llm
def test_a_grounded_freeform_evaluation_records_it_and_its_matcher_finds_no_hallucination(dataset, llamacpp_backend) -> None:  # noqa: F811
    system = LLMAnswers("smollm2-135m", limit=2, k=3, grounded=True, backend=llamacpp_backend)
    entry = evaluate([system], dataset, ["freeform"], samples=10)["results"][0]
    assert entry["options"]["grounded"] is True and entry["options"]["grounded_answers"] == 2
    assert entry["extra"]["hallucination_rate"] == 0 and entry["extra"]["titles_per_answer"] == 3


@pytest.mark.llm
def test_the_real_llamacpp_server_grounds_through_its_grammar_field(dataset, llamacpp_server) -> None:  # noqa: F811
    prompt = fixture_prompts(dataset, 3, 1)[0]
    result = run_stage2(dataset, load_backend("custom", base_url=llamacpp_server, model="smollm2"), prompt, GREEDY, grounded=True)
    check_grounded(dataset, result, 3)
    assert result.grounding.note.startswith("the server's guided decoding")


@pytest.mark.llm
def test_stop_ends_a_grounded_stream_and_keeps_the_lines_so_far(dataset, llamacpp_backend) -> None:  # noqa: F811
    prompt = fixture_prompts(dataset, 5, 1)[0]
    stop, chunks = threading.Event(), []
    constraint = answer_constraint(dataset, prompt.history, prompt.k)
    for chunk in llamacpp_backend.stream(prompt.text, GREEDY, stop=stop, constraint=constraint):
        chunks.append(chunk)
        if "\n2." in "".join(chunks):
            stop.set()
    assert "".join(chunks).startswith("1. ") and "\n3." not in "".join(chunks)


@pytest.mark.llm
def test_generate_grounded_says_which_engine_grounded_it(capsys, ml_dir, dataset) -> None:
    user = str(int(dataset.split_users["test"][0]))
    argv = ["generate", "--user", user, "--template", "list-k", "--k", "3", "--greedy", "--no-lstm", "--data-dir", str(ml_dir)]
    assert main([*argv, "--grounded", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["grounded"] is True and result["grounding"].startswith("llama.cpp") and "grounded by llama.cpp" in err
    assert len(result["recommended"]) == 3 and all(t["movie_id"] is not None for t in result["titles"])
    assert main([*argv, "--grounded"]) == 0 and "\n--- grounded by llama.cpp" in capsys.readouterr().out


def test_app_columns_each_report_their_grounding_and_an_empty_candidate_set_is_a_column_message(dataset, tmp_path) -> None:
    store, settings = RecordingStore(tmp_path), GenerationSettings(max_new_tokens=8, seed=1)
    models = {"free": SharedModel(FreeBackend("1. Toy Story (1995)")), "grounding": SharedModel(FirstChoiceBackend(""))}
    load = lambda spec, replica: models[spec]  # noqa: E731
    prompt = prepare_prompt(dataset, dataset.catalogue[:5].tolist(), None, "list-k", 3)
    columns = plan_columns(["free", "grounding"], prompt.text, settings, load, store, False, grounded=True)
    comparison = start_comparison(prompt, columns, store, dataset=dataset)
    assert comparison.streams.wait(10)
    free, grounded = comparison.finish(dataset).values()
    assert not free.grounding.grounded and "cannot ground" in free.grounding.note and free.answer == "1. Toy Story (1995)"
    assert grounded.grounding == columns[1].grounding and grounded.grounding.note == "first choice"
    assert grounded.answer == format_answer(dataset.movies, dataset.catalogue[5:8].tolist())
    assert all(r.settings["grounded"] for r in store.all())

    everything = prepare_prompt(dataset, dataset.catalogue.tolist(), None, "list-k", 3)
    columns = plan_columns(["free", "grounding"], everything.text, settings, load, store, False, grounded=True)
    comparison = start_comparison(everything, columns, store, dataset=dataset)
    assert comparison.streams.wait(10)
    assert all("Every one of the 1,000 catalogue movies" in answer.error for answer in comparison.answers.values())


@pytest.mark.llm
def test_the_app_grounds_local_columns_by_default_and_each_caption_says_so(app_env) -> None:  # noqa: F811
    at = run()
    assert at.toggle(key="grounded-True").value is True  # both default columns run here
    at = generate(at)
    assert texts(at.caption).count("Grounded answers: only real, unwatched catalogue movies, by llama.cpp") == 2
    results = at.session_state[app_state.COMPARISON].results.values()
    assert all(r.grounding.grounded and len(r.titles) == 3 and r.hallucinations == 0 for r in results)
    at.toggle(key="grounded-True").set_value(False)
    at = generate(run(at))
    assert texts(at.caption).count("Grounded answers off") == 2
    assert all(r.grounding is None for r in at.session_state[app_state.COMPARISON].results.values())


def test_the_nucleus_is_the_fewest_most_likely_tokens_reaching_top_p_and_free_picks_cover_the_vocabulary() -> None:
    rng = np.random.default_rng(0)
    for scale in (0.1, 1.0, 5.0):  # flat to peaked: found among the first 64, 1,024 or all of them
        probabilities = np.exp(rng.normal(size=49_152) * scale)
        probabilities /= probabilities.sum()
        order = np.argsort(-probabilities, kind="stable")
        for top_p in (0.5, 0.95, 1.0):
            expected = order[: min(len(order), int(np.searchsorted(np.cumsum(probabilities[order]), top_p)) + 1)]
            assert set(nucleus(probabilities, top_p).tolist()) == set(expected.tolist())
    logits = rng.normal(size=1000)
    assert pick_token(logits, None, 0.0, 0.95, rng) == int(np.argmax(logits))
    draws = {pick_token(logits, None, 1.0, 0.5, np.random.default_rng(seed)) for seed in range(200)}
    allowed_half = set(np.argsort(-logits)[: len(nucleus(np.exp(logits) / np.exp(logits).sum(), 0.5))].tolist())
    assert draws <= allowed_half and len(draws) > 1


@pytest.mark.llm
def test_llamacpp_reads_a_repeated_prompt_once_and_answers_as_a_fresh_model(dataset, llamacpp_backend, monkeypatch) -> None:  # noqa: F811
    """The prompt cache: the same prompt is not read again, one sharing a prefix is read from its first chunk not
    shared, and every answer (sampled, grounded) is the one a freshly loaded model gives."""
    from dualrec.llm.llamacpp_backend import PROMPT_CHUNK

    first, second = fixture_prompts(dataset, 5, 2)
    sampled = GenerationSettings(max_new_tokens=24, temperature=1.0, seed=5)
    asked = [(first, sampled, False), (first, GREEDY, True), (second, sampled, False), (first, sampled, False)]
    fresh = load_backend("smollm2-135m", engine="llama.cpp")
    expected = [run_stage2(dataset, fresh, p, s, grounded=g).answer for p, s, g in asked]
    fresh.close()
    tokens = [llamacpp_backend._chat_tokens([{"role": "user", "content": p.text}]) for p in (first, second)]
    shared = next(i for i, (a, b) in enumerate(zip(*tokens)) if a != b)
    llama, starts = llamacpp_backend.llama, []
    evaluate = llama.eval
    monkeypatch.setattr(llama, "eval", lambda batch: (starts.append(llama.n_tokens), evaluate(batch))[1])
    first_read = []
    for (prompt, settings, grounded), answer in zip(asked, expected):
        starts.clear()
        assert run_stage2(dataset, llamacpp_backend, prompt, settings, grounded=grounded).answer == answer
        first_read.append(starts[0])
    assert first_read[1] == len(tokens[0])  # the same prompt again is not read again: only the answer's tokens
    assert first_read[2] == first_read[3] == shared // PROMPT_CHUNK * PROMPT_CHUNK  # from the first chunk not shared
