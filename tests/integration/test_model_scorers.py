"""Model-based scorers with real tiny models: the reward model (a sequence classifier) and
the LLM judge (a causal LM behind the transformers backend), through the worker code path.

Runs in: the test process (torch on CPU; the shard function is called directly, as a Ray
worker would call it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dataflywheel.store import open_store
from dataflywheel.training.reward import build_tiny_reward_model
from dataflywheel.training.tiny import TinyModelConfig, build_tiny_model
from dataflywheel.verifiers import build
from workers.model_scorers import ScoringModels
from workers.verify import score_items

SHAPE = TinyModelConfig(
    hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128, max_seq_len=64
)
PROMPTS = {
    1: {"prompt_set": "t", "split": "train", "text": "2+2=", "reference": {"answer": "4"}},
    2: {"prompt_set": "t", "split": "train", "text": "3+5=", "reference": {"answer": "8"}},
}
SAMPLES = [(10, 1, 0, "4"), (11, 1, 1, "four"), (12, 2, 0, "8"), (13, 2, 1, "x8y")]


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_model(SHAPE, tmp_path_factory.mktemp("rm") / "rm", 3, digit_bias=1)


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(SHAPE, tmp_path_factory.mktemp("judge") / "judge", 5)


def test_reward_model_scores_a_shard_in_batches(reward_dir: Path) -> None:
    config = {"name": "reward_model", "model": str(reward_dir), "batch_size": 3, "threshold": 1}
    rows = score_items([config], PROMPTS, SAMPLES)
    one_by_one = score_items([{**config, "batch_size": 1}], PROMPTS, SAMPLES)
    assert [r["sample_id"] for r in rows] == [10, 11, 12, 13]
    # The tiny model rewards a text that ends in a digit (~5.7, else 0); threshold 1 decides.
    assert [r["passed"] for r in rows] == [True, False, True, False]
    assert all(r["status"] == "scored" and r["verifier"] == "reward_model" for r in rows)
    assert [r["value"] for r in rows] == pytest.approx([r["value"] for r in one_by_one], abs=1e-5)
    assert rows[0]["details"]["reward"] == rows[0]["value"] > 0
    # The version cites code + config + the folder's weights (batch size is config too).
    version = build(config).version
    assert {r["verifier_version"] for r in rows} == {version}
    retrained = reward_dir.parent / "other"
    build_tiny_reward_model(SHAPE, retrained, 4)
    assert build({**config, "model": str(retrained)}).version != version


def test_reward_model_folder_gone_at_scoring_time_names_the_field(
    reward_dir: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "rm"
    shutil.copytree(reward_dir, moved)
    config = {"name": "reward_model", "model": str(moved)}
    verifier = build(config)
    shutil.rmtree(moved)
    with pytest.raises(FileNotFoundError, match=r"reward_model.model: model folder .* does not"):
        verifier.version  # noqa: B018
    # A worker builds the verifier from its config again: validation names the field.
    with pytest.raises(ValueError, match=r"(?s)RewardModelConfig\nmodel\n.*does not exist"):
        score_items([config], PROMPTS, SAMPLES)
    causal = tmp_path / "causal"
    build_tiny_model(SHAPE, causal, 1)
    with pytest.raises(ValueError, match="has 2 labels|not a sequence-classification"):
        score_items([{**config, "model": str(causal)}], PROMPTS, SAMPLES)


def test_judge_on_a_real_model_records_every_judgement(judge_dir: Path) -> None:
    # An untrained model writes noise: each judgement is either parsed or unscorable with
    # its reason and the raw text, never dropped and never a silent pass or fail.
    config = {
        "name": "llm_judge",
        "model": str(judge_dir),
        "rubric": "{prompt}{completion}:",
        "score_pattern": "([0-9])",
        "min_score": 0,
        "max_score": 9,
        "pass_score": 5,
        "max_tokens": 6,
    }
    rows = score_items([config], PROMPTS, SAMPLES)
    again = score_items([config], PROMPTS, SAMPLES)
    assert rows == again  # greedy: the same judgements
    assert [r["sample_id"] for r in rows] == [10, 11, 12, 13]
    for row in rows:
        assert row["verifier_version"] == build(config).version
        assert "judgement" in row["details"]
        if row["status"] == "unscorable":
            assert row["reason"] == "judge_unparseable" and row["value"] is None
        else:
            assert row["reason"] in ("judge_pass", "judge_fail") and 0 <= row["value"] <= 1
    # A pattern the noise cannot match: every sample is unscorable, with the reason.
    strict = score_items([{**config, "score_pattern": "SCORE=([0-9])"}], PROMPTS, SAMPLES)
    assert {(r["status"], r["reason"]) for r in strict} == {("unscorable", "judge_unparseable")}


def test_self_judging_uses_each_samples_own_checkpoint_from_the_store(
    judge_dir: Path, tmp_path: Path
) -> None:
    store = open_store(str(tmp_path / "objects"))
    key = store.put_tree(judge_dir).key
    other = build_tiny_model(SHAPE, tmp_path / "other", 6)
    other_key = store.put_tree(other).key
    config = {
        "name": "llm_judge",
        "model": "current",
        "rubric": "{completion}=",
        "score_pattern": "([0-9])",
        "max_score": 9,
        "pass_score": 5,
        "max_tokens": 6,
    }
    models = ScoringModels(
        str(tmp_path / "objects"),
        {},
        str(tmp_path / "cache"),
        {10: f"store:{key}", 11: f"store:{key}", 12: f"store:{other_key}", 13: f"store:{key}"},
    )
    rows = score_items([config], PROMPTS, SAMPLES, models)
    assert [r["sample_id"] for r in rows] == [10, 11, 12, 13]
    # The same judgement as judging with the folder directly, for the samples it generated.
    direct = score_items([{**config, "model": str(judge_dir)}], PROMPTS, SAMPLES)
    assert [r["details"]["judgement"] for i, r in enumerate(rows) if i != 2] == [
        r["details"]["judgement"] for i, r in enumerate(direct) if i != 2
    ]
    with pytest.raises(RuntimeError, match="sample 11 has no generating checkpoint"):
        score_items([config], PROMPTS, SAMPLES, ScoringModels(sample_models={10: "x"}))
