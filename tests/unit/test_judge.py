"""The LLM-as-judge scorer's pure parts: rubric rendering, judgement parsing, config checks.

Runs in: the test process (pure; the generation is a plain function here).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dataflywheel.prompts import Prompt
from dataflywheel.spec import RunSpec, format_errors
from dataflywheel.verifiers import build
from dataflywheel.verifiers.judge import JudgeVerifier, LlmJudgeConfig

PROMPT = Prompt("t", "train", "What is {2+2}?")


def test_rubric_renders_prompt_and_completion_verbatim() -> None:
    judge = JudgeVerifier(LlmJudgeConfig(rubric="Q: {prompt}\nA: {completion}\nScore:"))
    assert judge.render("def f(): return {}", PROMPT) == (
        "Q: What is {2+2}?\nA: def f(): return {}\nScore:"
    )


@pytest.mark.parametrize(
    ("judgement", "status", "passed", "value", "reason"),
    [
        ("Score: 9. Reason: correct and short.", "scored", True, 0.9, "judge_pass"),
        ("score=3\nreason: wrong sum", "scored", False, 0.3, "judge_fail"),
        ("Score: 7", "scored", True, 0.7, "judge_pass"),
        ("I think it is fine!", "unscorable", None, None, "judge_unparseable"),
        ("Score: 12. Reason: great", "unscorable", None, None, "judge_out_of_range"),
        ("", "unscorable", None, None, "judge_unparseable"),
    ],
)
def test_judgements_parse_to_scores_or_unscorable(
    judgement: str, status: str, passed: bool | None, value: float | None, reason: str
) -> None:
    score = JudgeVerifier(LlmJudgeConfig()).parse(judgement)
    assert (score.status, score.passed, score.reason) == (status, passed, reason)
    assert score.value == (pytest.approx(value) if value is not None else None)
    assert score.details["judgement"] == judgement
    if status == "scored":
        assert score.details["judge_score"] == pytest.approx(10 * value)


def test_judge_reason_and_named_group() -> None:
    config = LlmJudgeConfig(
        score_pattern=r"\[\[(?P<score>\d)\]\]", min_score=1, max_score=5, pass_score=4
    )
    score = JudgeVerifier(config).parse("Reason: it adds up. Verdict [[5]]")
    assert score.passed and score.value == 1.0
    assert score.details["judge_reason"] == "it adds up. Verdict [[5]]"


def test_score_batch_uses_the_generate_function_in_order() -> None:
    judge = build({"name": "llm_judge", "rubric": "{completion}", "pass_score": 5})
    seen: list[str] = []

    def generate(texts: list[str]) -> list[str]:
        seen.extend(texts)
        return [f"Score: {len(t)}" for t in texts]

    scores = judge.score_batch(["abc", "abcdefgh", "x" * 40], [PROMPT] * 3, generate)
    assert seen == ["abc", "abcdefgh", "x" * 40]
    assert [s.passed for s in scores] == [False, True, None]
    assert scores[2].reason == "judge_out_of_range"
    with pytest.raises(RuntimeError, match="needs a generation backend"):
        judge.score_batch(["a"], [PROMPT])


def test_version_hashes_the_configuration() -> None:
    a = build({"name": "llm_judge"}).version
    assert a == build({"name": "llm_judge"}).version
    assert a != build({"name": "llm_judge", "pass_score": 8}).version


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"rubric": "no placeholder"}, "verification.verifiers[1].rubric: must contain"),
        ({"min_score": 5, "max_score": 5}, "verification.verifiers[1].min_score: must be <"),
        ({"score_pattern": "(("}, "verification.verifiers[1].score_pattern: not a valid"),
        ({"backend": "openai"}, "verification.verifiers[1].base_url: backend openai needs"),
        ({"model": "/nonexistent/judge"}, "verification.verifiers[1].model: model folder"),
    ],
)
def test_bad_judge_configs_name_the_field(patch: dict, message: str) -> None:
    data = {
        "model": {"source": "smollm2"},
        "prompts": {"kind": "builtin", "family": "word_problems"},
        "verification": {"verifiers": [{"name": "exact_answer"}, {"name": "llm_judge", **patch}]},
    }
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate(data)
    lines = format_errors(info.value)
    assert any(line.startswith(message) for line in lines), lines


def test_missing_reward_model_path_names_the_field() -> None:
    data = {
        "model": {"source": "smollm2"},
        "prompts": {"kind": "builtin", "family": "word_problems"},
        "verification": {
            "verifiers": [{"name": "exact_answer"}, {"name": "reward_model", "model": "nope/rm"}]
        },
    }
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate(data)
    (line,) = format_errors(info.value)
    assert line.startswith("verification.verifiers[1].model: model folder ")
    assert "nope/rm' does not exist" in line and "store:sha256" in line
