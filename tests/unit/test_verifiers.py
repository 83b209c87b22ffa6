"""Verifiers: answer extraction, each verifier's verdicts, loud failures, versions, registry.

Runs in: the test process (pure).
"""

from __future__ import annotations

import itertools
import re

import pytest
from pydantic import ValidationError

from dataflywheel import verifiers
from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import (
    GroupVerifier,
    MissingReferenceError,
    Score,
    Verifier,
    build,
)
from dataflywheel.verifiers.answers import extract_answer, normalise, parse_number
from dataflywheel.verifiers.majority import majority_vote


def _prompt(answer: object = "19", **kwargs: object) -> Prompt:
    reference = None if answer is None else {"answer": answer}
    return Prompt("words", "train", "Tom has 12 apples...", reference, **kwargs)  # type: ignore[arg-type]


# --- extraction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mode", "strict", "expected"),
    [
        ("12 + 7 = 19.\nAnswer: 19", "answer_line", False, "19"),
        ("Answer: 19 apples", "answer_line", False, "19"),
        ("Answer: 19 apples", "answer_line", True, "19 apples"),
        ("answer = **1,234**.", "answer_line", False, "1234"),
        ("Answer: 3\nWait, Answer: 4", "answer_line", False, "4"),  # the last answer line
        ("He has 12, then 7 more: 19", "answer_line", False, "19"),  # lenient fallback
        ("He has 12, then 7 more: 19", "answer_line", True, None),  # strict: no fallback
        ("Answer:   ", "answer_line", True, None),
        ("Answer: Paris.", "answer_line", False, "Paris"),
        ("7-3 leaves 4 and then -5", "last_number", False, "-5"),
        ("12-7", "last_number", False, "7"),  # a binary minus is not a sign
        ("1,2,3", "last_number", False, "3"),
        ("no digits here", "last_number", False, None),
        (" 42 ", "last_number", True, "42"),
        ("42 apples", "last_number", True, None),
        ("  975\n", "full", False, "975"),
        ("003", "full", True, "003"),  # reversed sums keep their leading zeros
        ("   ", "full", False, None),
    ],
)
def test_extract_answer(text: str, mode: str, strict: bool, expected: str | None) -> None:
    assert extract_answer(text, mode, strict) == expected  # type: ignore[arg-type]


def test_unknown_extraction_mode_raises() -> None:
    with pytest.raises(ValueError, match="unknown extraction mode"):
        extract_answer("1", "first_word")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42.0),
        ("-3.5", -3.5),
        ("1,234", 1234.0),
        ("3/4", 0.75),
        ("$5$", 5.0),
        ("1/0", None),
        ("nan", None),
        ("inf", None),
        ("1_000", None),
        ("twelve", None),
        ("1e3", 1000.0),
    ],
)
def test_parse_number(text: str, expected: float | None) -> None:
    assert parse_number(text) == expected


def test_normalise() -> None:
    assert normalise("  **Paris**.  ") == "Paris"
    assert normalise("3.14") == "3.14"
    assert normalise("`a   b`") == "a b"


# --- Score ------------------------------------------------------------------------------------


def test_score_invariants() -> None:
    assert Score.scored(True, "match") == Score(1.0, True, "scored", "match", {})
    assert Score.unscorable("timeout").value is None
    with pytest.raises(ValueError):
        Score(None, True, "scored", "x")
    with pytest.raises(ValueError):
        Score(0.0, None, "unscorable", "x")
    with pytest.raises(ValueError):
        Score(float("nan"), False, "scored", "x")
    with pytest.raises(ValueError):
        Score(1.0, True, "scored", "")
    with pytest.raises(ValueError):
        Score(1.0, True, "maybe", "x")  # type: ignore[arg-type]


# --- exact_answer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "completion", "reference", "passed", "reason"),
    [
        ({}, "12 + 7 = 19\nAnswer: 19", "19", True, "match"),
        ({}, "Answer: 18", "19", False, "mismatch"),
        ({}, "I am not sure.", "19", False, "no_answer"),
        ({}, "Answer: PARIS", "Paris", True, "match"),
        ({"case_sensitive": True}, "Answer: PARIS", "Paris", False, "mismatch"),
        ({}, "Answer: paris", ["Paris", "Lutetia"], True, "match"),
        ({}, "Answer: 19", 19, True, "match"),  # numeric references compare as text
        ({"extract": "full", "strict": True}, "975", "975", True, "match"),
        ({"extract": "full", "strict": True}, "975 ", "579", False, "mismatch"),
    ],
)
def test_exact_answer(
    config: dict, completion: str, reference: object, passed: bool, reason: str
) -> None:
    score = build({"name": "exact_answer", **config}).score(completion, _prompt(reference))
    assert (score.passed, score.reason, score.value) == (passed, reason, float(passed))
    assert score.status == "scored"


def test_no_answer_is_a_scored_zero_not_an_error() -> None:
    score = build({"name": "exact_answer", "strict": True}).score("19", _prompt("19"))
    assert score == Score(0.0, False, "scored", "no_answer", {"expected": ["19"]})


@pytest.mark.parametrize("name", ["exact_answer", "numeric"])
def test_reference_verifiers_refuse_prompts_without_reference(name: str) -> None:
    verifier = build({"name": name})
    with pytest.raises(MissingReferenceError, match=r"needs prompt.reference\['answer'\]"):
        verifier.score("Answer: 19", _prompt(None))
    with pytest.raises(MissingReferenceError, match="keys"):
        verifier.score("Answer: 19", Prompt("s", "train", "q", {"label": "19"}))


# --- numeric ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "completion", "reference", "passed", "reason"),
    [
        ({}, "Answer: 19.0", "19", True, "within_tolerance"),
        ({}, "Answer: 19.01", "19", False, "out_of_tolerance"),
        ({"tolerance": 0.05}, "Answer: 19.01", "19", True, "within_tolerance"),
        ({"tolerance": 0.01, "mode": "relative"}, "Answer: 1005", "1000", True, "within_tolerance"),
        (
            {"tolerance": 0.01, "mode": "relative"},
            "Answer: 1011",
            "1000",
            False,
            "out_of_tolerance",
        ),
        ({"tolerance": 0.5, "mode": "relative"}, "Answer: 0.1", "0", False, "out_of_tolerance"),
        ({}, "Answer: 3/4", "0.75", True, "within_tolerance"),
        ({}, "Answer: many", "19", False, "no_answer"),
        ({}, "no number at all", "19", False, "no_answer"),
    ],
)
def test_numeric(config: dict, completion: str, reference: str, passed: bool, reason: str) -> None:
    score = build({"name": "numeric", **config}).score(completion, _prompt(reference))
    assert (score.passed, score.reason) == (passed, reason)


def test_numeric_refuses_a_non_numeric_reference() -> None:
    with pytest.raises(MissingReferenceError, match="is not a number"):
        build({"name": "numeric"}).score("Answer: 3", _prompt("three"))


# --- regex -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "completion", "passed"),
    [
        ({}, "Some reasoning.\nAnswer: 19", True),
        ({}, "Some reasoning. The answer is 19", False),
        ({"pattern": r"\d+", "mode": "fullmatch"}, " 975\n", True),
        ({"pattern": r"\d+", "mode": "fullmatch"}, "975 apples", False),
        ({"pattern": r"^answer:", "flags": ["IGNORECASE", "MULTILINE"]}, "x\nANSWER: 1", True),
        ({"pattern": r"^answer:"}, "x\nANSWER: 1", False),
    ],
)
def test_regex(config: dict, completion: str, passed: bool) -> None:
    # A format check needs no reference: prompts without one are fine.
    score = build({"name": "regex", **config}).score(completion, _prompt(None))
    assert score.passed is passed
    assert score.reason == ("match" if passed else "format_mismatch")


def test_regex_refuses_a_bad_pattern() -> None:
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        build({"name": "regex", "pattern": "(unclosed"})


# --- majority vote ---------------------------------------------------------------------------


def test_majority_vote_counts_every_sample() -> None:
    result = majority_vote(["19", " 19 ", None, "18", "19."])
    assert result.winner == "19" and result.share == 3 / 5 and not result.tied
    assert result.agreement == (True, True, False, False, True)
    assert (result.n, result.answered, result.votes) == (5, 4, {"18": 1, "19": 3})


def test_majority_vote_ties_are_deterministic_and_order_free() -> None:
    answers = ["b", "a", "b", "a", None]
    winners = {majority_vote(list(p)).winner for p in itertools.permutations(answers)}
    assert winners == {"a"}
    assert majority_vote(answers).tied


def test_majority_vote_without_answers() -> None:
    result = majority_vote([None, None])
    assert result.winner is None and result.share == 0.0 and result.agreement == (False, False)
    with pytest.raises(ValueError):
        majority_vote([])


def test_majority_vote_verifier_scores_agreement() -> None:
    verifier = build({"name": "majority_vote", "min_agreement": 0.5})
    completions = ["Answer: 19", "Answer: 19", "Answer: 18", "no idea"]
    scores = verifier.score_group(completions, _prompt(None))  # needs no reference
    assert [s.reason for s in scores] == ["agrees", "agrees", "disagrees", "no_answer"]
    assert [s.passed for s in scores] == [True, True, False, False]
    assert scores[0].value == 0.5 and scores[0].details["majority"] == "19"


def test_majority_vote_verifier_weak_majority_and_tie() -> None:
    weak = build({"name": "majority_vote", "min_agreement": 0.75})
    scores = weak.score_group(["Answer: 1", "Answer: 1", "Answer: 2", "x"], _prompt(None))
    assert [s.reason for s in scores] == [
        "weak_majority",
        "weak_majority",
        "disagrees",
        "no_answer",
    ]
    assert not any(s.passed for s in scores)
    tie = build({"name": "majority_vote"}).score_group(["Answer: 1", "Answer: 2"], _prompt(None))
    assert [s.reason for s in tie] == ["tie", "disagrees"]


# --- protocols, versions, registry -----------------------------------------------------------


def test_registry_builds_each_verifier_meeting_its_protocol() -> None:
    # Model scorers need a model to build (tests/integration/test_model_scorers.py).
    for name in set(verifiers.REGISTRY) - set(verifiers.MODEL_SCORERS):
        verifier = build({"name": name})
        assert verifier.name == name
        if name == "majority_vote":
            assert isinstance(verifier, GroupVerifier) and verifier.scope == "group"
        else:
            assert isinstance(verifier, Verifier) and verifier.scope == "sample"
    config = verifiers.CONFIG_TYPES["numeric"](tolerance=0.1)
    assert build(config).config == config


def test_unknown_verifier_lists_the_allowed_names() -> None:
    allowed = "unknown verifier 'bleu'; allowed: code_tests, exact_answer"
    with pytest.raises(ValueError, match=allowed):
        build({"name": "bleu"})


def test_versions_hash_code_and_config() -> None:
    names = set(verifiers.REGISTRY) - set(verifiers.MODEL_SCORERS)
    versions = {name: build({"name": name}).version for name in names}
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in versions.values())
    assert len(set(versions.values())) == len(versions)
    assert build({"name": "numeric"}).version == build({"name": "numeric"}).version
    assert build({"name": "numeric", "tolerance": 0.5}).version != versions["numeric"]


def test_verifiers_are_deterministic() -> None:
    verifier = build({"name": "exact_answer"})
    prompt = _prompt("19")
    assert verifier.score("Answer: 19", prompt) == verifier.score("Answer: 19", prompt)


def test_unknown_config_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="tolerence"):
        build({"name": "numeric", "tolerence": 0.1})
