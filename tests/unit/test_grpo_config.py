"""GRPO's typed settings and their mapping onto TRL's ``GRPOConfig``
(dataflywheel/training/grpo_config.py).

Runs in: the test process; imports TRL (the real ``GRPOConfig`` validates what we map).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import ValidationError

from dataflywheel.training import TrainConfig
from dataflywheel.training.grpo_config import GrpoSettings, grpo_args, reward_weights

trl = pytest.importorskip("trl")

VERIFIERS = ["exact_answer", "regex"]


def _config(**overrides: object) -> TrainConfig:
    values = {"method": "sft", "mode": "full", "learning_rate": 1e-5, "batch_size": 16}
    values |= {"seed": 7, "max_steps": 3, **overrides}
    return TrainConfig(**values)  # type: ignore[arg-type]


def test_every_default_is_trls_own() -> None:
    trl_defaults = {f.name: f.default for f in dataclasses.fields(trl.GRPOConfig)}
    ours = GrpoSettings().model_dump(exclude={"reward_weights", "save_steps"})
    assert ours == {name: trl_defaults[name] for name in ours}
    # Ours, where TRL's default would not fit: None weights are TRL's "all 1.0", and no
    # trainer-state saves unless asked (TRL saves every 500 steps into a scratch folder).
    assert trl_defaults["reward_weights"] is None


def test_the_mapping_is_a_valid_grpo_config(tmp_path: Path) -> None:
    settings = GrpoSettings(
        num_generations=4,
        beta=0.04,
        epsilon_high=0.28,
        loss_type="dr_grpo",
        scale_rewards="none",
        max_completion_length=16,
        reward_weights={"exact_answer": 1.0, "regex": 0.25},
        save_steps=2,
    )
    config = trl.GRPOConfig(**grpo_args(_config(), settings, VERIFIERS, tmp_path))
    assert (config.num_generations, config.beta, config.epsilon, config.epsilon_high) == (
        4,
        0.04,
        0.2,
        0.28,
    )
    assert (config.loss_type, config.scale_rewards, config.max_completion_length) == (
        "dr_grpo",
        "none",
        16,
    )
    assert config.reward_weights == [1.0, 0.25]
    # What the training section says: 16 completions per step (4 groups of 4), 3 steps.
    assert (config.per_device_train_batch_size, config.max_steps, config.learning_rate) == (
        16,
        3,
        1e-5,
    )
    assert (config.save_strategy, config.save_steps, config.seed) == ("steps", 2, 7)
    assert config.log_completions is False and config.bf16 is False


def test_a_batch_that_is_not_whole_groups_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"training.batch_size: 12 .* multiple of 8"):
        grpo_args(_config(batch_size=12), GrpoSettings(), VERIFIERS, tmp_path)


def test_reward_weights_follow_the_verifiers_and_name_what_is_wrong() -> None:
    assert reward_weights(GrpoSettings(), VERIFIERS) == [1.0, 1.0]
    only_regex = GrpoSettings(reward_weights={"regex": 2.0})
    assert reward_weights(only_regex, VERIFIERS) == [0.0, 2.0]
    with pytest.raises(ValueError, match=r"names \['bleu'\].*verifiers are"):
        reward_weights(GrpoSettings(reward_weights={"bleu": 1.0}), VERIFIERS)
    with pytest.raises(ValueError, match="every weight is 0"):
        reward_weights(GrpoSettings(reward_weights={"regex": 0.0}), VERIFIERS)


def test_settings_outside_their_range_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="num_generations"):
        GrpoSettings(num_generations=1)
    with pytest.raises(ValidationError, match="loss_type"):
        GrpoSettings(loss_type="ppo")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="group_size"):
        GrpoSettings(group_size=4)  # type: ignore[call-arg]
