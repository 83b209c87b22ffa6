"""GRPO on the tiny model through TRL's ``GRPOTrainer`` (dataflywheel/training/grpo.py).

Runs in: the test process (torch, transformers, TRL on CPU). The rewards are the run's own
verifiers; every rollout TRL sampled reaches the bank's sink with each component's verdict.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from dataflywheel.prompts import Prompt
from dataflywheel.training import TrainConfig
from dataflywheel.training.grpo import train_grpo
from dataflywheel.training.grpo_config import GrpoSettings
from dataflywheel.training.grpo_rewards import RewardBank, Rollout
from dataflywheel.training.tiny import TinyModelConfig, build_tiny_model
from dataflywheel.verifiers import build

pytest.importorskip("trl")

pytestmark = pytest.mark.slow  # two GRPO trainings (~30 s on 2 cores)

SHAPE = TinyModelConfig(
    hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128, max_seq_len=32
)
PROMPTS = [
    Prompt("sums", "train", "3+4=", {"answer": "7"}),
    Prompt("sums", "train", "5+7=", {"answer": "12"}),
]
# A random model is never right, so exact_answer alone would give every group the same
# reward and no gradient; whether a completion starts with a digit varies from the start.
VERIFIERS = [
    {"name": "exact_answer", "extract": "full"},
    {"name": "regex", "pattern": "^[0-9]"},
]


def _train(base: Path, out: Path) -> tuple[list[Rollout], object]:
    rollouts: list[Rollout] = []
    bank = RewardBank([build(c) for c in VERIFIERS], PROMPTS, rollouts.extend)
    config = TrainConfig(
        method="sft", mode="full", learning_rate=1e-3, batch_size=8, seed=5, max_steps=2
    )
    settings = GrpoSettings(num_generations=4, max_completion_length=4)
    return rollouts, train_grpo(base, PROMPTS, bank, config, settings, out)


def test_two_steps_store_every_rollout_with_its_rewards_and_are_deterministic(
    tmp_path: Path,
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    base = build_tiny_model(SHAPE, tmp_path / "base", seed=3)
    rollouts, result = _train(base, tmp_path / "out")
    assert result.train.steps == 2 and len(result.train.losses) == 2
    # Each step sampled one batch: 8 completions, 4 per prompt, each scored by both verifiers.
    assert Counter(r.step for r in rollouts) == {0: 8, 1: 8}
    for step in (0, 1):
        keys = Counter(r.prompt_key for r in rollouts if r.step == step)
        assert keys == {p.content_hash: 4 for p in PROMPTS}
    assert all(set(r.scores) == {"exact_answer", "regex"} for r in rollouts)
    # TRL's logged mean reward per step is the mean of what our verifiers gave its rollouts.
    for logged in result.steps:
        step = int(logged["step"]) - 1
        ours = [r for r in rollouts if r.step == step]
        regex = sum(r.scores["regex"].value for r in ours) / len(ours)
        exact = sum(r.scores["exact_answer"].value for r in ours) / len(ours)
        assert logged["reward/regex"] == pytest.approx(regex)
        assert logged["reward/exact_answer"] == pytest.approx(exact)
        assert logged["reward"] == pytest.approx(regex + exact)
    # The policy moved, and the result is a plain folder the next round loads.
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    start = AutoModelForCausalLM.from_pretrained(base)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(trained.state_dict().values(), start.state_dict().values(), strict=True)
    )
    # Same seed, same base: the same rollouts (CPU fp32).
    again, _ = _train(base, tmp_path / "again")
    assert [(r.step, r.prompt_key, r.completion) for r in again] == [
        (r.step, r.prompt_key, r.completion) for r in rollouts
    ]
