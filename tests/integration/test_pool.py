"""The run's generator actor outlives the task that created it (real local Ray).

A named actor that is not detached is reference counted: without the driver keeping a
handle, every generate stage started a fresh actor (and a fresh vLLM engine).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from workers.driver import placement
from workers.driver.ray_session import NAMESPACE


@pytest.fixture
def ray_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace=NAMESPACE)
    yield
    ray.shutdown()


def _stage(run_id: int) -> str:
    """What a generate task does with the actor: use it, then drop its handle."""
    actor = placement.generator(run_id, "transformers")
    return ray.get(actor.node_id.remote()) and actor._actor_id.hex()


def test_generator_actor_survives_between_stages(ray_local: None) -> None:
    first = _stage(901)
    gc.collect()
    assert _stage(901) == first
    assert ray.get_actor("generator-run901-0", namespace=NAMESPACE)._actor_id.hex() == first
    placement.release_generators(901)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # ray.kill is asynchronous
        try:
            ray.get_actor("generator-run901-0", namespace=NAMESPACE)
        except ValueError:
            break
        time.sleep(0.2)
    assert _stage(901) != first  # a released run gets a fresh actor
    placement.release_generators(901)
