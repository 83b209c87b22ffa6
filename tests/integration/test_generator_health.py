"""The generator health probe on a real local Ray with a real tiny model.

Two real hangs: the backend stops producing tokens inside a generate call while the actor
process still answers (``inject_stall``), and the whole actor process is frozen (SIGSTOP).
Both are declared hung within their deadlines, and the replacement actor generates the same
completions the hung one would have.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from dataflywheel.generation import GenerationRequest, SamplingConfig
from dataflywheel.training.tiny import TinyModelConfig
from workers.bootstrap import build_base_model
from workers.driver import health, placement
from workers.driver.ray_session import NAMESPACE

TINY = TinyModelConfig(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128)
GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=6)
REQUESTS = [GenerationRequest(i, 0, 0, f"{i}+{i}=") for i in range(8)]
RUN = 4242


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray (2 CPUs) and the stored tiny model's key."""
    data_dir = tmp_path_factory.mktemp("data")
    saved = os.environ.get("FLYWHEEL_DATA_DIR")
    os.environ["FLYWHEEL_DATA_DIR"] = str(data_dir)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace=NAMESPACE)
    try:
        store_uri, options, _ = placement.store_args()
        key, _ = ray.get(build_base_model.remote(store_uri, options, TINY, 0))
        yield key
    finally:
        placement.release_generators(RUN)
        ray.shutdown()
        if saved is None:
            os.environ.pop("FLYWHEEL_DATA_DIR", None)
        else:
            os.environ["FLYWHEEL_DATA_DIR"] = saved


def _fresh(key: str) -> object:
    actor = placement.generator(RUN, "transformers", backend_options={"batch_size": 4})
    health.ready(actor, key, "float32", stall_timeout_s=60, probe_timeout_s=120)
    return actor


def test_stalled_backend_is_detected_and_replaced(ray_local: str) -> None:
    actor = _fresh(ray_local)
    expected = ray.get(actor.generate.remote(REQUESTS, GREEDY))
    assert health.check(actor, stall_timeout_s=5, probe_timeout_s=30) is None  # idle is fine
    ray.get(actor.inject_stall.remote(after_steps=2))  # two decoding steps, then none
    ref = actor.generate.remote(REQUESTS, GREEDY)
    start = time.monotonic()
    with pytest.raises(health.GeneratorHung, match="no token for"):
        health.wait(actor, [ref], stall_timeout_s=3, probe_timeout_s=30)
    assert 3 < time.monotonic() - start < 60
    stalled = ray.get(actor.health.remote(), timeout=30)
    assert stalled["state"] == "generating" and stalled["steps"] >= 2  # alive, answering
    replacement = placement.replace_generator(
        RUN, "transformers", backend_options={"batch_size": 4}
    )
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(ref, timeout=60)  # the hung call died with its actor
    health.ready(replacement, ray_local, "float32", stall_timeout_s=60, probe_timeout_s=120)
    assert ray.get(replacement.health.remote())["pid"] != stalled["pid"]
    assert ray.get(replacement.generate.remote(REQUESTS, GREEDY)) == expected


def test_frozen_actor_is_detected_and_replaced(ray_local: str) -> None:
    actor = _fresh(ray_local)
    pid = ray.get(actor.health.remote())["pid"]
    os.kill(pid, signal.SIGSTOP)  # Ray still sees a live process holding its CPU
    try:
        ref = actor.generate.remote(REQUESTS, GREEDY)
        with pytest.raises(health.GeneratorHung, match="no answer"):
            health.wait(actor, [ref], stall_timeout_s=60, probe_timeout_s=3)
        replacement = placement.replace_generator(
            RUN, "transformers", backend_options={"batch_size": 4}
        )
        health.ready(replacement, ray_local, "float32", stall_timeout_s=60, probe_timeout_s=120)
        assert len(ray.get(replacement.generate.remote(REQUESTS, GREEDY))) == len(REQUESTS)
        deadline = time.monotonic() + 60  # the kill must reach a stopped process (SIGKILL)
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _gone(pid), "the frozen actor's process survived its replacement"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: nothing reaps Ray's orphans in some containers)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
