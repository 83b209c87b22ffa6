"""The run's verifiers as GRPO reward functions (dataflywheel/training/grpo_rewards.py).

Runs in: the test process (pure). The reward functions are called the way TRL 1.16's
``GRPOTrainer._calculate_rewards`` calls them: keyword arguments ``prompts``, ``completions``,
``completion_ids``, ``trainer_state`` and every dataset column, one entry per completion.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from dataflywheel.prompts import Prompt
from dataflywheel.training.grpo_rewards import PROMPT_KEY, RewardBank, Rollout, completion_text
from dataflywheel.verifiers import build

SEVEN = Prompt("sums", "train", "3+4=", {"answer": "7"})
TWELVE = Prompt("sums", "train", "5+7=", {"answer": "12"})
NO_REFERENCE = Prompt("sums", "train", "what is 1+1?")


def _call(function, prompts, completions, step=3):
    """One call as TRL makes it (prompts repeated per completion)."""
    return function(
        prompts=[p.text for p in prompts],
        completions=completions,
        completion_ids=[[0] for _ in completions],
        trainer_state=SimpleNamespace(global_step=step),
        **{PROMPT_KEY: [p.content_hash for p in prompts]},
    )


def _bank(*configs, sink=None, prompts=(SEVEN, TWELVE)):
    return RewardBank([build(c) for c in configs], list(prompts), sink)


def test_each_verifier_is_a_component_named_after_it_with_its_scores() -> None:
    bank = _bank(
        {"name": "exact_answer", "extract": "full"},
        {"name": "regex", "pattern": "^[0-9]+$"},
    )
    exact, regex = bank.functions()
    assert (exact.__name__, regex.__name__) == ("exact_answer", "regex")
    prompts = [SEVEN, SEVEN, TWELVE, TWELVE]
    completions = ["7", "8", "12", "twelve"]
    assert _call(exact, prompts, completions) == [1.0, 0.0, 1.0, 0.0]
    assert _call(regex, prompts, completions) == [1.0, 1.0, 1.0, 0.0]


def test_a_batch_is_scored_once_and_its_rollouts_reach_the_sink_once() -> None:
    batches: list[list[Rollout]] = []
    bank = _bank(
        {"name": "exact_answer", "extract": "full"},
        {"name": "regex", "pattern": "^[0-9]+$"},
        sink=batches.append,
    )
    prompts, completions = [SEVEN, TWELVE], ["7", "13"]
    for function in bank.functions():  # TRL calls each component with the same batch
        _call(function, prompts, completions, step=5)
    assert len(batches) == 1
    first, second = batches[0]
    assert (first.step, first.position, first.prompt_key, first.completion) == (
        5,
        0,
        SEVEN.content_hash,
        "7",
    )
    assert {n: s.passed for n, s in first.scores.items()} == {"exact_answer": True, "regex": True}
    assert {n: s.passed for n, s in second.scores.items()} == {
        "exact_answer": False,
        "regex": True,
    }
    # The next step's batch (same completions again) is a new batch of rollouts.
    _call(bank.functions()[0], prompts, completions, step=6)
    assert len(batches) == 2 and batches[1][0].step == 6


def test_majority_vote_scores_each_prompts_group_wherever_it_lies_in_the_batch() -> None:
    bank = _bank({"name": "majority_vote", "extract": "full", "min_agreement": 0.5})
    (vote,) = bank.functions()
    # Interleaved on purpose: a group is every completion of one prompt, not a slice. The
    # reward is the score's value: the majority's share for an answer that agrees with it.
    prompts = [SEVEN, TWELVE, SEVEN, TWELVE, SEVEN, TWELVE]
    completions = ["7", "12", "7", "11", "9", "12"]
    two_thirds = pytest.approx(2 / 3)
    assert _call(vote, prompts, completions) == [
        two_thirds,
        two_thirds,
        two_thirds,
        0,
        0,
        two_thirds,
    ]


def test_an_unscorable_verdict_is_none_which_trl_leaves_out() -> None:
    # Tests that do not parse give no verdict at all: unscorable, so None for TRL (NaN: left
    # out of the weighted sum; advantage 0 where no component scored the completion).
    broken = Prompt("code", "train", "def f():", {"answer": "7"}, tests="def check(candidate:\n")
    bank = _bank(
        {"name": "code_tests"}, {"name": "exact_answer", "extract": "full"}, prompts=[broken]
    )
    code, exact = bank.functions()
    assert _call(code, [broken, broken], ["7", "8"]) == [None, None]
    assert _call(exact, [broken, broken], ["7", "8"]) == [1.0, 0.0]
    scores = bank.scores(["7", "8"], {PROMPT_KEY: [broken.content_hash] * 2}, None)
    assert [s["code_tests"].reason for s in scores] == ["tests_unparseable"] * 2


def test_an_answer_that_cannot_be_parsed_scores_zero_not_none() -> None:
    bank = _bank({"name": "numeric"})
    (numeric,) = bank.functions()
    assert _call(numeric, [SEVEN, SEVEN], ["7", "no idea"]) == [1.0, 0.0]


def test_conversational_completions_are_scored_on_the_assistants_message() -> None:
    bank = _bank({"name": "exact_answer", "extract": "full"})
    (exact,) = bank.functions()
    completions = [[{"role": "assistant", "content": "7"}], [{"role": "assistant", "content": "1"}]]
    assert _call(exact, [SEVEN, SEVEN], completions) == [1.0, 0.0]
    with pytest.raises(ValueError, match="list of messages"):
        completion_text([])


def test_bad_wiring_is_refused_naming_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one verifier"):
        RewardBank([], [SEVEN])
    same = {"name": "exact_answer", "extract": "full"}
    with pytest.raises(ValueError, match="its own name"):
        _bank(same, same)
    with pytest.raises(ValueError, match="reward_model"):
        _bank({"name": "reward_model", "model": str(tmp_path)})
    (exact,) = _bank({"name": "exact_answer", "extract": "full"}).functions()
    with pytest.raises(ValueError, match="prompt_key"):
        exact(prompts=["3+4="], completions=["7"], completion_ids=[[0]], trainer_state=None)
    with pytest.raises(KeyError, match="does not know"):
        _call(exact, [NO_REFERENCE], ["2"])
