"""A generation stage on a pool of two generator actors (``resources.generators: 2``): real
Prefect tasks, real Postgres, the local store, a real local Ray and a real tiny model.

The stage's shards are spread over both actors (each actor's own count of the calls it
answered, ``GeneratorWorker.stats``), and its samples equal those of a one-actor pool. When
one of the two actors fails while it holds shards — its process killed (``kill -9``), or its
backend stalled so the pool's health check declares it hung — the stage goes on, the failed
one's shards are redone, and it ends with every sample exactly once.
"""

from __future__ import annotations

import copy
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from dataflywheel.spec import RunSpec
from tests.invariant_support import query
from workers.driver import health, placement, ray_session
from workers.driver.ray_session import NAMESPACE

PROMPTS, SAMPLES, SHARD = 12, 2, 4  # 24 requests: 6 shards
SPEC = {
    "name": "pool",
    "seed": 5,
    "rounds": 1,
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
    "prompts": {"kind": "builtin", "family": "addition", "min_difficulty": 2, "max_difficulty": 2},
    # Sampled, not greedy: the samples differ per seed, so equal rows prove equal seeds.
    "generation": {"backend": "transformers", "temperature": 1.0, "max_tokens": 6},
    "evaluation": {"num_prompts": PROMPTS, "samples_per_prompt": SAMPLES},
}


@pytest.fixture
def stage_env(
    db_url: str, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The environment a flow process has (this test's database and store, the session's
    Prefect server); generation shards of ``SHARD`` requests."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
        temporary_settings,
    )

    from tasks import context, generate

    monkeypatch.delenv("FLYWHEEL_PREFECT_API_URL", raising=False)
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", db_url)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLYWHEEL_STORE_URI", str(tmp_path / "objects"))
    monkeypatch.setattr(generate, "SHARD_SIZE", SHARD)
    context.reset()
    try:
        # The tasks run without a flow here: their logs stay local.
        quiet = {PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}
        with temporary_settings({PREFECT_API_URL: prefect_api, **quiet}):
            yield
    finally:
        if ray.is_initialized():
            ray_session.shutdown()
        context.reset()


def _baseline(generators: int) -> int:
    """Register a run with a pool of ``generators``, and generate its base model's baseline
    (round 0) with real Prefect tasks; returns the run id. The stage gets no Prefect retry:
    the pool must get past a failed actor within one task run."""
    from tasks.generate import generate_samples
    from tasks.rounds import start_round
    from tasks.runs import prepare_base_model, register_run

    spec = copy.deepcopy(SPEC)
    spec["resources"] = {"generators": generators}
    run_id = register_run(RunSpec.model_validate(spec))
    base = prepare_base_model(run_id)
    generate = generate_samples.with_options(retries=0)
    assert generate(start_round(run_id, 0), "baseline", base) == PROMPTS * SAMPLES
    return run_id


def _samples(db_url: str, run_id: int) -> list[tuple]:
    """Every sample of the run, as it would be anywhere: prompt content, index, seed, text."""
    return query(
        db_url,
        "SELECT p.content_hash, s.sample_index, s.seed, s.text, s.completion_tokens, "
        "s.finish_reason, s.sampling_params::text FROM samples s JOIN prompts p "
        "ON p.id = s.prompt_id JOIN rounds r ON r.id = s.round_id WHERE r.run_id = :r "
        "ORDER BY 1, 2",
        r=run_id,
    )


def _shards(db_url: str, run_id: int) -> list[tuple]:
    return query(
        db_url,
        "SELECT s.shard_index, s.status, s.attempt FROM stage_shards s JOIN rounds r "
        "ON r.id = s.round_id WHERE r.run_id = :r AND s.stage = 'generate_baseline' "
        "ORDER BY 1",
        r=run_id,
    )


def _actor(run_id: int, index: int):
    return ray.get_actor(f"generator-run{run_id}-{index}", namespace=NAMESPACE)


def test_a_pool_of_two_splits_the_shards_and_draws_the_samples_of_one(
    stage_env: None, db_url: str
) -> None:
    single = _baseline(generators=1)
    assert ray.get(_actor(single, 0).stats.remote()) == {
        "generate_calls": 6,
        "requests": PROMPTS * SAMPLES,
    }
    placement.release_generators(single, 1)  # its CPU reservation, for the next run's actors

    pair = _baseline(generators=2)
    stats = [ray.get(_actor(pair, i).stats.remote()) for i in range(2)]
    assert all(s["generate_calls"] >= 1 for s in stats), stats  # both actors drew shards
    assert sum(s["generate_calls"] for s in stats) == 6
    assert sum(s["requests"] for s in stats) == PROMPTS * SAMPLES
    assert [s[1:] for s in _shards(db_url, pair)] == [("done", 1)] * 6
    samples = _samples(db_url, pair)
    assert len(samples) == PROMPTS * SAMPLES
    assert samples == _samples(db_url, single)
    placement.release_generators(pair, 2)


def test_actors_started_with_the_run_are_the_ones_that_generate(stage_env: None) -> None:
    # flywheel_run starts the run's actors before the base model exists (start_generators),
    # so their libraries load meanwhile; the stage must then use those actors, not new ones.
    from tasks.generate import generate_samples, start_generators
    from tasks.rounds import start_round
    from tasks.runs import prepare_base_model, register_run

    spec = copy.deepcopy(SPEC)
    spec["resources"] = {"generators": 2}
    run_id = register_run(RunSpec.model_validate(spec))
    assert start_generators(run_id) == 2
    pids = [ray.get(_actor(run_id, i).health.remote(), timeout=60)["pid"] for i in range(2)]
    base = prepare_base_model(run_id)
    assert generate_samples(start_round(run_id, 0), "baseline", base) == PROMPTS * SAMPLES
    after = [ray.get(_actor(run_id, i).health.remote(), timeout=60)["pid"] for i in range(2)]
    stats = [ray.get(_actor(run_id, i).stats.remote()) for i in range(2)]
    assert after == pids
    assert sum(s["generate_calls"] for s in stats) == 6
    placement.release_generators(run_id, 2)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["kill", "stall"])
def test_a_failed_pool_actor_loses_only_its_shards(
    stage_env: None, db_url: str, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kill``: its process is killed (Ray restarts it in place); ``stall``: its backend
    stops producing tokens, the pool's health check notices and a fresh actor replaces it."""
    from tasks import context

    monkeypatch.setenv("FLYWHEEL_GENERATION_STALL_TIMEOUT_S", "5")
    context.reset()
    seen: dict[str, object] = {}
    run_id = query(db_url, "SELECT coalesce(max(id), 0) FROM runs")[0][0] + 1  # the next run's

    def fail_second_actor_mid_stage(stop: threading.Event) -> None:
        # The second actor of the next run, as soon as it exists (it then still loads its
        # model): its 1-token probe passes, its first shard stalls after one token, so it
        # surely holds shards when it fails.
        while not stop.wait(0.02):
            if not ray.is_initialized():  # the stage's task connects this process to Ray
                continue
            try:
                actor = _actor(run_id, 1)
            except ValueError:  # not created yet
                continue
            ray.get(actor.inject_stall.remote(after_steps=1), timeout=60)
            break
        while not stop.wait(0.05):
            now = ray.get(actor.health.remote(), timeout=60)
            if now["state"] == "generating" and now["quiet_s"] > 0.5:
                seen["pid"] = now["pid"]
                if fault == "kill":
                    os.kill(now["pid"], signal.SIGKILL)
                return

    stop = threading.Event()
    saboteur = threading.Thread(
        target=lambda: seen.update(error=_catch(fail_second_actor_mid_stage, stop)), daemon=True
    )
    saboteur.start()
    try:
        assert _baseline(generators=2) == run_id
    finally:
        stop.set()
        saboteur.join(timeout=60)
    assert seen.get("error") is None, seen["error"]
    assert seen.get("pid"), "the second actor never held a shard"
    shards = _shards(db_url, run_id)
    assert [s[1] for s in shards] == ["done"] * 6
    assert any(s[2] >= 2 for s in shards), shards  # the failed actor's shards were redone
    samples = _samples(db_url, run_id)
    assert len(samples) == PROMPTS * SAMPLES
    assert len({s[:2] for s in samples}) == len(samples)  # each (prompt, index) once
    # A new process under the same name: restarted in place (kill) or replaced (stall).
    assert health.wait_alive(_actor(run_id, 1), 60) == "ALIVE"
    assert ray.get(_actor(run_id, 1).health.remote())["pid"] != seen["pid"]
    placement.release_generators(run_id, 2)


def _catch(fn, stop: threading.Event) -> BaseException | None:
    try:
        fn(stop)
    except BaseException as exc:
        return exc
    return None
