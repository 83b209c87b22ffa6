"""GRPO's settings, typed, and their mapping onto TRL's ``GRPOConfig``.

Runs in: anywhere for :class:`GrpoSettings` (pure pydantic: the spec and the API validate it);
:func:`grpo_args` runs in the training worker (a Ray actor), where TRL is imported.

Every default is TRL 1.16's own (``tests/unit/test_grpo_config.py`` checks them against
``GRPOConfig``), so a field left out behaves as TRL documents it. What the rest of the training
section already says (learning rate, steps, batch size, precision, seed) is not repeated here:
:func:`grpo_args` takes it from the :class:`~dataflywheel.training.TrainConfig`, where
``batch_size`` counts *completions* per optimiser step, a whole number of groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.training import TrainConfig

LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]


class GrpoSettings(BaseModel):
    """Group-relative policy optimisation (Shao et al. 2024, DeepSeekMath) as TRL runs it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_generations: int = Field(
        8,
        ge=2,
        le=256,
        description="Group size: completions sampled per prompt; each is scored against its "
        "group's mean (a group of one has no baseline).",
    )
    beta: float = Field(
        0.0,
        ge=0,
        description="KL coefficient against the starting model; 0 loads no reference model.",
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clipping range of the policy ratio.")
    epsilon_high: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Upper clipping bound (DAPO's clip-higher); None: the same as epsilon.",
    )
    loss_type: LossType = Field(
        "dapo",
        description="How token losses are aggregated (TRL's loss_type): grpo (per sequence), "
        "dr_grpo (constant normaliser, Dr. GRPO), dapo (per token over the batch), bnpo, "
        "cispo, sapo, luspo, vespo.",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="Divide advantages by the group's reward std (group), the batch's (batch), "
        "or not at all (none, as Dr. GRPO recommends).",
    )
    max_completion_length: int = Field(
        512, ge=1, description="Tokens a rollout may generate before it is cut."
    )
    num_iterations: int = Field(
        1, ge=1, description="Optimiser passes over each generation batch (GRPO's mu)."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of the rollouts.")
    mask_truncated_completions: bool = Field(
        False, description="Leave rollouts cut at max_completion_length out of the loss."
    )
    reward_weights: dict[str, float] | None = Field(
        None,
        description="Weight of each reward component, by verifier name; None: every verifier "
        "counts 1.0. A verifier left out of a given mapping counts 0.",
    )
    save_steps: int | None = Field(
        None,
        ge=1,
        description="Save the trainer's state every this many steps, so a killed round "
        "resumes from there; None: never (a killed round starts again from step 0).",
    )


def reward_weights(settings: GrpoSettings, verifiers: Sequence[str]) -> list[float]:
    """The weights in verifier order (TRL's ``reward_weights`` follows ``reward_funcs``)."""
    if settings.reward_weights is None:
        return [1.0] * len(verifiers)
    unknown = sorted(set(settings.reward_weights) - set(verifiers))
    if unknown:
        raise ValueError(
            f"training.grpo.reward_weights names {unknown}, which are not verifiers of this "
            f"run; the verifiers are {list(verifiers)}"
        )
    weights = [float(settings.reward_weights.get(name, 0.0)) for name in verifiers]
    if not any(weights):
        raise ValueError(
            "training.grpo.reward_weights: every weight is 0, so no completion would earn a "
            "reward; give at least one verifier a weight"
        )
    return weights


def grpo_args(
    config: TrainConfig, settings: GrpoSettings, verifiers: Sequence[str], scratch: Path
) -> dict[str, Any]:
    """Keyword arguments of ``GRPOConfig`` for one round's training: ``config`` gives what
    every trainer shares (learning rate and schedule, steps, batch, precision, seed; its
    ``method`` is not read), ``settings`` the rest, ``verifiers`` the reward components'
    names in the order of the reward functions."""
    from dataflywheel.training.sft import trainer_args

    if config.batch_size % settings.num_generations:
        raise ValueError(
            f"training.batch_size: {config.batch_size} completions per step is not a whole "
            f"number of groups of training.grpo.num_generations {settings.num_generations}; "
            f"use a multiple of {settings.num_generations}"
        )
    args = trainer_args(config, scratch)
    args.update(
        num_generations=settings.num_generations,
        beta=settings.beta,
        epsilon=settings.epsilon,
        epsilon_high=settings.epsilon_high,
        loss_type=settings.loss_type,
        scale_rewards=settings.scale_rewards,
        max_completion_length=settings.max_completion_length,
        num_iterations=settings.num_iterations,
        temperature=settings.temperature,
        top_p=settings.top_p,
        mask_truncated_completions=settings.mask_truncated_completions,
        reward_weights=reward_weights(settings, verifiers),
        # The rollouts go to our store (grpo_rewards.Rollout), not to TRL's console table.
        log_completions=False,
    )
    if settings.save_steps is not None:
        args.update(save_strategy="steps", save_steps=settings.save_steps)
    return args
