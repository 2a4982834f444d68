"""NIR (Wang & Lim 2023) on the generated fixture: the candidates of user and item filtering against plain loops that
follow the reference's sort_uf_items / soft_if_items, the three prompts in the reference's wording and their chaining
(a scripted backend that records every prompt), the third answer read as candidates (free, in the paper's format, and
grounded to the candidate set), both scored protocols in the harness, bad options, and one real run of the embedded
model through `dualrec evaluate`."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.cli import main
from dualrec.data.dataset import PAD_ITEM
from dualrec.errors import ConfigError
from dualrec.evaluation.freeform import sample_cases
from dualrec.evaluation.harness import evaluate, watched_before
from dualrec.grounding.grounded import catalogue_choices
from dualrec.grounding.nir_prompts import movie_name
from dualrec.llm import GenerationSettings, LLMBackend, Message
from dualrec.llm.constraint import AnswerConstraint, write_lines
from dualrec.ranking.base import CandidateRanker
from dualrec.ranking.nir import NIROptions, NIRRecommender, item_filtering, user_filtering
from dualrec.ranking.registry import new_system, system_names

CASES = 4


class ScriptedBackend(LLMBackend):
    """A backend that records every prompt and answers it with `script(prompt)`; it cannot ground."""

    def __init__(self, script: Callable[[str], str]) -> None:
        super().__init__("scripted")
        self.script = script
        self.prompts: list[str] = []
        self.constraints: list[AnswerConstraint] = []

    def _stream(self, messages: list[Message], settings: GenerationSettings, stop: threading.Event) -> Iterator[str]:
        self.prompts.append(messages[-1]["content"])
        yield self.script(self.prompts[-1])


class GroundingBackend(ScriptedBackend):
    """A scripted backend that grounds: it writes the allowed choices in catalogue order, and records each constraint."""

    grounding = "scripted"

    def _stream_grounded(
        self, messages: list[Message], settings: GenerationSettings, stop: threading.Event, constraint: AnswerConstraint
    ) -> Iterator[str]:
        self.prompts.append(messages[-1]["content"])
        self.constraints.append(constraint)

        def first_left(answer: str, used: frozenset[int]) -> Iterator[str]:
            yield next(c for i, c in enumerate(constraint.choices.choices) if i not in constraint.excluded | used).text

        return write_lines(constraint, first_left, stop)


def steps(prompt: str) -> str:
    """Answers each step with its name, so that the next prompts show where each answer went."""
    return f"answer to step {prompt.count('Step ')}"


@pytest.fixture(scope="module")
def few(dataset):
    return dataclasses.replace(dataset, cases={split: sample_cases(cases, CASES, 0) for split, cases in dataset.cases.items()})


def ready(dataset, backend: LLMBackend, **options) -> NIRRecommender:
    nir = NIRRecommender(NIROptions(**options), backend=backend)
    nir.fit(dataset)
    return nir


def case_movies(dataset, nir: NIRRecommender, row: int = 0) -> tuple[list[int], list[int]]:
    """The first test case's candidate movie ids (best first) and its last 8 watched movie ids (oldest first)."""
    cases = dataset.cases["test"]
    history = cases.histories[row]
    candidates = dataset.catalogue[nir.own_candidates(dataset, cases)[row]].tolist()
    return candidates, dataset.catalogue[history[history != PAD_ITEM]][-8:].tolist()


# ---- candidates -----------------------------------------------------------------------------------------------------


def reference_user_filtering(dataset, user_movies: set[int], users: int = 12, size: int = 19) -> list[int]:
    """sort_uf_items in plain Python over the training users: the 12 largest overlaps vote, weighted by their share."""
    training = [set(dataset.user_items(int(user)).tolist()) for user in dataset.split_users["train"]]
    similar = sorted(range(len(training)), key=lambda u: (-len(training[u] & user_movies), u))[:users]
    total = sum(len(training[u] & user_movies) for u in similar)
    votes: dict[int, float] = {}
    for u in similar:
        for item in training[u] - user_movies:
            votes[item] = votes.get(item, 0.0) + len(training[u] & user_movies) / total
    return sorted(votes, key=lambda item: (-round(votes[item] * total), item))[:size]  # ties exact: the shares' sums


def test_user_filtering_is_the_references_vote_of_the_most_similar_training_users(dataset):
    nir = ready(dataset, ScriptedBackend(steps))
    cases = dataset.cases["test"]
    found = nir.own_candidates(dataset, cases)
    watched = watched_before(dataset, cases)
    assert found.shape == (len(cases), 19)
    for row in range(5):
        assert found[row].tolist() == reference_user_filtering(dataset, set(np.flatnonzero(watched[row]).tolist()))
        assert not watched[row, found[row]].any()


def test_only_training_users_vote():
    watched = np.array([[True, True, False, False, False]])
    training = np.array([[1, 1, 0, 0, 1], [1, 0, 1, 0, 0], [0, 0, 0, 1, 0]], dtype=np.float32)
    # overlaps 2, 1, 0: the two nearest vote with weights 2/3 and 1/3; movie 4 (2/3) before movie 2 (1/3), then 3 (0)
    assert user_filtering(watched, training, neighbours=2, size=3).tolist() == [[4, 2, 3]]
    assert user_filtering(watched, training[2:], neighbours=1, size=2).tolist() == [[2, 3]]  # no overlap: most rated


def test_item_filtering_sums_the_co_watch_counts_of_each_watched_movies_nearest():
    watched = np.array([[True, False, False, False]])
    co_watched = np.array([[9, 5, 3, 4], [5, 8, 1, 0], [3, 1, 7, 2], [4, 0, 2, 6]], dtype=np.float32)
    # movie 0's 3 nearest: itself (9), 1 (5), 3 (4); movie 2 (3) is not among them
    assert item_filtering(watched, co_watched, neighbours=3, size=3).tolist() == [[1, 3, 2]]


def test_item_filtering_on_the_fixture_keeps_out_watched_movies(dataset):
    nir = ready(dataset, ScriptedBackend(steps), filtering="item")
    cases = dataset.cases["test"]
    found = nir.own_candidates(dataset, cases)
    assert found.shape == (len(cases), 19) and not np.take_along_axis(watched_before(dataset, cases), found, axis=1).any()
    assert nir.name.endswith("item filtering)")


# ---- the three prompts ----------------------------------------------------------------------------------------------


def test_the_three_prompts_are_the_references_and_each_answer_goes_into_the_next(dataset, few):
    backend = ScriptedBackend(steps)
    nir = ready(few, backend, grounded=False)
    candidates, watched = case_movies(few, nir)
    nir.rank_candidates(few, few.cases["test"].take([0]))
    first, second, third = backend.prompts
    shown = re.match(r"Candidate Set \(candidate movies\): (.*)\.\n", first)[1]
    assert sorted(shown.split(", ")) == sorted(movie_name(few.movies, movie) for movie in candidates)
    assert shown.split(", ") != [movie_name(few.movies, movie) for movie in candidates]  # shuffled, as the reference does
    context = (
        f"Candidate Set (candidate movies): {shown}.\n"
        f"The movies I have watched (watched movies): {', '.join(movie_name(few.movies, m) for m in watched)}.\n"
        "Step 1: What features are most important to me when selecting movies (Summarize my preferences briefly)? \n"
    )
    assert first == context + "Answer: \n"
    assert second == (
        context + "Answer: answer to step 1.\n"
        "Step 2: Selecting the most featured movies from the watched movies according to my preferences "
        "(Format: [no. a watched movie.]). \nAnswer: \n"
    )
    assert third == (
        context + "Answer: answer to step 1.\n"
        "Step 2: Selecting the most featured movies (at most 5 movies) from the watched movies according to my "
        "preferences in descending order (Format: [no. a watched movie.]). \nAnswer: answer to step 2.\n"
        "Step 3: Can you recommend 10 movies from the Candidate Set similar to the selected movies I've watched "
        "(Format: [no. a watched movie - a candidate movie])?.\nAnswer: \n"
    )


def test_the_target_is_in_no_prompt_unless_it_is_a_candidate(dataset, few):
    backend = ScriptedBackend(steps)
    nir = ready(few, backend, grounded=False)
    cases = few.cases["test"]
    candidates = nir.own_candidates(few, cases)
    nir.rank_candidates(few, cases, candidates)
    for row, target in enumerate(cases.targets):
        named = movie_name(few.movies, int(few.catalogue[target])) in "".join(backend.prompts[3 * row : 3 * row + 3])
        assert named == (target in candidates[row])


def test_a_free_third_answer_in_the_papers_format_ranks_its_candidates(dataset, few):
    nir = ready(few, ScriptedBackend(steps), grounded=False)
    candidates, watched = case_movies(few, nir)
    outsider = next(m for m in few.catalogue.tolist() if m not in candidates and m not in watched)
    name = lambda movie: movie_name(few.movies, movie)  # noqa: E731
    third = "\n".join(
        [
            f"[1. {name(watched[0])} - {name(candidates[3])}]",
            f"2. {name(candidates[5])}",
            "3. Not A Real Movie At All (1999)",
            f"4. {name(watched[1])} - {name(outsider)}",
            f"5. {name(watched[2])} -> {name(candidates[0])}",
        ]
    )
    nir.backend.script = lambda prompt: third if "Step 3" in prompt else steps(prompt)
    got = nir.rank_candidates(few, few.cases["test"].take([0]))
    assert got.lists == [few.item_of([candidates[3], candidates[5], candidates[0]]).tolist()]
    figures = got.figures
    assert figures["hallucination_rate"] == 1 / 5 and figures["outside_candidates_rate"] == 1 / 4
    assert figures["grounded_answers"] == 0 and figures["candidates_per_case"] == 19


def test_a_grounded_third_answer_names_only_candidates(dataset, few):
    backend = GroundingBackend(steps)
    nir = ready(few, backend)
    candidates, watched = case_movies(few, nir)
    got = nir.rank_candidates(few, few.cases["test"].take([0]))
    (constraint,) = backend.constraints
    choices, position = catalogue_choices(few)
    assert set(range(len(choices))) - constraint.excluded == {position[movie] for movie in candidates}
    assert "Step 3" in backend.prompts[-1] and len(backend.prompts) == 3
    assert len(got.lists[0]) == 10 and set(got.lists[0]) <= set(few.item_of(candidates).tolist())
    assert got.figures["grounded_answers"] == 1 and got.figures["hallucination_rate"] == 0


def test_an_engine_that_cannot_ground_answers_freely_and_says_so(dataset, few):
    nir = ready(few, ScriptedBackend(steps))
    got = nir.rank_candidates(few, few.cases["test"].take([0]))
    assert got.lists == [[]] and got.figures["grounded_answers"] == 0
    assert got.figures["empty_answers"] == 0


# ---- the harness ----------------------------------------------------------------------------------------------------


def test_the_harness_ranks_its_lists_under_full_and_sampled(dataset, few):
    backend = GroundingBackend(steps)
    nir = ready(few, backend)
    assert isinstance(nir, CandidateRanker) and "nir" in system_names() and isinstance(new_system("nir"), NIRRecommender)
    document = evaluate([nir], few, samples=20)
    full, sampled = document["results"]
    assert (full["protocol"], sampled["protocol"]) == ("full", "sampled-20") and full["cases"] == sampled["cases"] == CASES
    assert full["system"] == "NIR (smollm2-135m, not GPT-3)" and full["options"]["engine"] == "GroundingBackend"
    assert 0 <= full["extra"]["ceiling"] <= 1 and full["extra"]["candidates"] == "the system's own"
    assert sampled["extra"]["ceiling"] == 1.0 and sampled["extra"]["negative_seeds"] == [0]
    assert sampled["extra"]["candidates_per_case"] == 20 and "per_case" in sampled["seconds"]
    cases = few.cases["test"]
    for row, constraint in enumerate(backend.constraints[CASES:]):  # the sampled run: the target and its 19 negatives
        choices, position = catalogue_choices(few)
        allowed = set(range(len(choices))) - constraint.excluded
        negatives = few.negatives(cases, 0)[row]
        assert allowed == {position[int(few.catalogue[item])] for item in [cases.targets[row], *negatives]}
    hits = full["metrics"]["HR@10"]["value"]
    assert hits <= full["extra"]["ceiling"]  # NIR can only rank its candidates


def test_bad_options_are_one_message():
    with pytest.raises(ConfigError, match="Invalid NIR options: --llm: unknown model preset 'gpt-17'"):
        NIROptions(llm="gpt-17")
    with pytest.raises(
        ConfigError, match="--nir-filtering must be one of user, item, not 'both'; neighbours must be at least 1, not 0"
    ):
        NIROptions(neighbours=0, filtering="both")


# ---- the embedded model ---------------------------------------------------------------------------------------------


@pytest.mark.llm
def test_the_embedded_model_ranks_candidates_through_dualrec_evaluate(ml_dir, tmp_path, capsys):
    out = tmp_path / "nir.json"
    main(["evaluate", "--data-dir", str(ml_dir), "--systems", "nir", "--hybrid-limit", "2", "--out", str(out)])
    document = json.loads(out.read_text())
    full, sampled = document["results"]
    assert full["system"] == "NIR (smollm2-135m, not GPT-3) (2 test cases, seed 0)" and full["cases"] == 2
    for row in (full, sampled):
        assert row["extra"]["grounded_answers"] == 2 and row["extra"]["hallucination_rate"] == 0
        assert row["extra"]["ranked_per_answer"] == 10 and row["options"]["engine"] == "LlamaCppBackend"
    answers = [json.loads(line) for line in (tmp_path / "nir-nir-answers.jsonl").read_text().splitlines()]
    assert len(answers) == 4 and all(len(case["steps"]) == 3 and case["steps"][0]["answer"] for case in answers)
    assert "NIR (smollm2-135m, not GPT-3)" in capsys.readouterr().out
