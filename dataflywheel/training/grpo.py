"""Group-relative policy optimisation (Shao et al. 2024) through TRL's ``GRPOTrainer``.

Runs in: Ray worker (the training worker) and tests. Imports torch, transformers, TRL and
datasets, so the flow process must never import this module.

The trainer samples its own rollouts (``num_generations`` per prompt, with the model being
trained, through ``model.generate`` on CPU), scores them with the run's verifiers
(:class:`~dataflywheel.training.grpo_rewards.RewardBank`, which hands every scored rollout to
its sink) and takes a clipped policy-gradient step on the group-normalised rewards. The saved
folder, the determinism guarantee and the silenced output are those of ``sft.py``.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dataflywheel.generation.prompt_format import PromptFormat
from dataflywheel.prompts import Prompt
from dataflywheel.training import TrainConfig, TrainResult
from dataflywheel.training.grpo_config import GrpoSettings, grpo_args
from dataflywheel.training.grpo_rewards import PROMPT_KEY, RewardBank
from dataflywheel.training.sft import (
    check_out_dir,
    checkpoint_dtype,
    determinism_scope,
    load_for_training,
    lora_config,
    quiet,
    render_prompts,
    train_and_save,
)

# What each optimiser step's log says, as TRL 1.16 names it, and our name for it.
STEP_METRICS = {
    "reward": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "completions/mean_length": "completion_length",
    "frac_reward_zero_std": "frac_zero_std_groups",
}


@dataclass(frozen=True)
class GrpoResult:
    """A GRPO training run: what every trainer reports, and each step's rollout statistics
    (mean reward and its std, each component's mean reward, KL where ``beta`` > 0, mean
    completion length, the share of groups whose rewards were all equal, so no gradient)."""

    train: TrainResult
    steps: list[dict[str, float]]


def step_metrics(log_history: list[dict], components: Sequence[str]) -> list[dict[str, float]]:
    """Each logged step's statistics from a ``GRPOTrainer``'s ``state.log_history``."""
    wanted = dict(STEP_METRICS)
    wanted.update({f"rewards/{name}/mean": f"reward/{name}" for name in components})
    steps = []
    for entry in log_history:
        if "step" not in entry or "loss" not in entry:
            continue
        row = {"step": float(entry["step"])}
        for theirs, ours in wanted.items():
            value = entry.get(theirs)
            if isinstance(value, int | float) and math.isfinite(value):
                row[ours] = float(value)
        steps.append(row)
    return steps


def train_grpo(
    model_dir: Path,
    prompts: Sequence[Prompt],
    bank: RewardBank,
    config: TrainConfig,
    settings: GrpoSettings,
    out_dir: Path,
    prompt_format: PromptFormat | None = None,
) -> GrpoResult:
    """GRPO-train the model in ``model_dir`` on ``prompts``, rewarded by ``bank``'s verifiers;
    write the result to ``out_dir``. ``prompt_format`` renders each prompt as generation does."""
    if not prompts:
        raise ValueError("prompts: GRPO needs at least one prompt")
    unknown = [p.describe() for p in prompts if p.content_hash not in bank.prompts]
    if unknown:
        raise ValueError(f"prompts: the reward bank does not know {unknown[:3]}")
    out_dir = check_out_dir(out_dir)
    started = time.perf_counter()
    quiet()
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = load_for_training(model_dir)
    dataset = Dataset.from_dict(
        {
            "prompt": render_prompts([p.text for p in prompts], prompt_format, tokenizer),
            PROMPT_KEY: [p.content_hash for p in prompts],
        }
    )
    names = [v.name for v in bank.verifiers]
    with determinism_scope(), tempfile.TemporaryDirectory(prefix="grpo-") as scratch:
        args = GRPOConfig(**grpo_args(config, settings, names, Path(scratch)))
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=bank.functions(),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(config),
        )
        dtype = checkpoint_dtype(config, model_dir)
        result = train_and_save(trainer, tokenizer, out_dir, dtype, len(prompts), started)
    return GrpoResult(train=result, steps=step_metrics(trainer.state.log_history, names))
