"""``flywheel plan`` as users run it: a 7B model from a folder holding only its config.json,
full fine-tuning refused on one 80 GiB GPU and LoRA accepted; every example accepted; and
``flywheel run`` refusing the same spec before it starts anything.

Runs in: the test process, the CLI as a subprocess (no database, Ray or Prefect: none may
start).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.cli_support import flywheel

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "max_position_embeddings": 4096,
    "torch_dtype": "float16",
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A data directory of its own and a database nobody listens on: a command that tried
    to use either would leave files there or fail."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["FLYWHEEL_DATA_DIR"] = str(tmp_path / "data")
    env["FLYWHEEL_DATABASE_URL"] = "postgresql://flywheel:secret@127.0.0.1:9/flywheel"
    env["COLUMNS"] = "200"
    return env


def _spec(tmp_path: Path, training: dict) -> Path:
    model = tmp_path / "llama-2-7b"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps(LLAMA2_7B))
    spec = {
        "name": "llama7b",
        "model": {"source": str(model)},
        "prompts": {"kind": "builtin", "family": "addition"},
        "training": training,
        "resources": {"generator_gpus": 1, "train_gpus_per_worker": 1},
    }
    path = tmp_path / f"{training['mode']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_full_fine_tuning_refused_lora_accepted(env: dict[str, str], tmp_path: Path) -> None:
    full = _spec(tmp_path, {"mode": "full"})
    refused = flywheel("plan", str(full), env=env)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "6.74B parameters" in refused.stdout and "does not fit" in refused.stdout
    assert "verdict: refused" in refused.stdout
    assert "error: the memory plan refuses this spec" in refused.stderr
    assert (
        "training: " in refused.stderr and "per GPU > resources.gpu_memory_gib 80" in refused.stderr
    )
    for field in ("training.mode lora", "training.strategy fsdp", "resources.train_workers"):
        assert field in refused.stderr
    assert "Traceback" not in refused.stderr

    lora = _spec(tmp_path, {"mode": "lora", "batch_size": 16, "gradient_accumulation_steps": 8,
                            "gradient_checkpointing": True})  # fmt: skip
    accepted = flywheel("plan", str(lora), "--prompt-tokens", "1024", env=env)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "verdict: fits" in accepted.stdout
    assert "1024 prompt tokens (assumed" in accepted.stdout
    assert "KV cache budget holds" in accepted.stdout

    # `flywheel run` refuses the same spec with the same message before it starts anything.
    run = flywheel("run", str(full), env=env)
    assert run.returncode == 1 and "memory plan refuses this spec" in run.stderr
    assert "training.mode lora" in run.stderr and f"flywheel plan {full}" in run.stderr
    assert "FLYWHEEL_DATABASE_URL" not in run.stderr  # never got as far as the database
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_are_accepted(path: Path, env: dict[str, str], tmp_path: Path) -> None:
    result = flywheel("plan", str(path), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: " in result.stdout and "verdict: refused" not in result.stdout
    assert not (tmp_path / "data").exists()
