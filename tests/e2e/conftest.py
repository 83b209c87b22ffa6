"""Fixtures for end-to-end runs: the environment `flywheel run` sets up, a tiny spec, and a
multi-node Ray cluster of local processes."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataflywheel.config import Settings
from tests.local_cluster import LocalCluster
from workers.driver import ray_session

TINY_SPEC = {
    "name": "tiny-e2e",
    "seed": 11,
    "rounds": 2,
    "model": {
        "source": "builtin:tiny-llama",
        "tiny": {
            "hidden_size": 64,
            "num_layers": 1,
            "num_heads": 2,
            "intermediate_size": 128,
            "max_seq_len": 32,
        },
    },
    "prompts": {
        "kind": "builtin",
        "family": "addition",
        "min_difficulty": 2,
        "max_difficulty": 2,
        "num_prompts": 12,
    },
    "warmup": {"num_prompts": 48, "max_steps": 20, "learning_rate": 0.003},
    "generation": {
        "backend": "transformers",
        "samples_per_prompt": 3,
        # Greedy: an untrained model's samples then agree, so every round keeps data and
        # trains (the sampling path itself is covered by the backend tests).
        "temperature": 0.0,
        "max_tokens": 6,
    },
    "verification": {
        "verifiers": [
            {"name": "exact_answer", "extract": "full", "strict": True},
            {"name": "majority_vote", "extract": "full", "min_agreement": 0.3},
        ]
    },
    "selection": {"recipe": "majority_vote", "min_agreement": 0.3},
    "training": {
        "method": "sft",
        "mode": "full",
        "learning_rate": 0.001,
        "max_steps": 5,
        "batch_size": 8,
        "replay_share": 0.25,
        "labelled_share": 0.25,
    },
    "evaluation": {
        "metrics": ["accuracy", "per_difficulty_accuracy"],
        "primary": "accuracy",
        "verifier": "exact_answer",
        "num_prompts": 10,
        "samples_per_prompt": 1,
        "temperature": 0.0,
    },
    "promotion": {"max_drop": 1.0},
}


@pytest.fixture
def flywheel_env(db_url: str, prefect_api: str, tmp_path: Path) -> Iterator[Settings]:
    """The process environment a `flywheel run` sets up, pointed at this test's database."""
    from tasks import context

    saved = dict(os.environ)
    os.environ.pop("FLYWHEEL_PREFECT_API_URL", None)
    os.environ.update(
        {
            "FLYWHEEL_DATABASE_URL": db_url,
            "FLYWHEEL_DATA_DIR": str(tmp_path / "data"),
            "FLYWHEEL_STORE_URI": str(tmp_path / "objects"),
            "PREFECT_API_URL": prefect_api,
        }
    )
    settings = Settings()
    context.reset()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        # Prefect fixes its settings when it is first imported (collecting tests that import
        # tasks does that), so in-process flows would otherwise use a temporary server.
        with temporary_settings({PREFECT_API_URL: prefect_api}):
            yield settings
    finally:
        ray_session.shutdown()
        context.reset()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def tiny_spec() -> dict:
    """A spec small enough for a test: warm-up + 2 rounds of a 1-layer model."""
    return copy.deepcopy(TINY_SPEC)


@pytest.fixture
def local_cluster(flywheel_env: Settings) -> Iterator[LocalCluster]:
    """A Ray cluster of local processes, not started yet (``start_head``, ``add_node``);
    every process of it is killed afterwards. This process is the cluster's client while
    the test runs (its token), and a local Ray's afterwards."""
    cluster = LocalCluster()
    saved = cluster.join_process()
    try:
        yield cluster
    finally:
        ray_session.shutdown()
        try:
            cluster.stop()
        finally:
            cluster.leave_process(saved)
