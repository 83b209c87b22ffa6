"""A real two-node Ray cluster of local processes: a round's shards run on both nodes and
the results equal a single-node run's.

``ray start --head`` plus a second ``ray start --address ...`` node, each with one CPU and its
own resources (``workers/local_cluster.py``); the flow connects through
``FLYWHEEL_RAY_ADDRESS``. The generator actor holds half of one node's CPU for the run, so
verification lands on the other node (the ledger's ``worker_node`` must name both), and the two
Ray Train workers of the round's training (DDP over gloo) run one on each node. Teardown kills
exactly the processes these ``ray start`` calls created, never ``ray stop``, which would stop
every Ray on this shared machine.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest
import yaml

from dataflywheel.config import Settings
from dataflywheel.spec import load_spec
from tests.invariant_support import query
from tests.local_cluster import LocalCluster
from workers.driver import ray_session

pytestmark = pytest.mark.slow


def _digests(db_url: str, run_id: int) -> list[tuple]:
    return query(
        db_url,
        "SELECT r.index, d.digest, c.digest, c.status, (SELECT string_agg(s.text, '|' ORDER BY "
        "p.content_hash, s.purpose, s.sample_index) FROM samples s JOIN prompts p ON "
        "p.id = s.prompt_id WHERE s.round_id = r.id) FROM rounds r LEFT JOIN datasets d "
        "ON d.round_id = r.id LEFT JOIN checkpoints c ON c.round_id = r.id "
        "WHERE r.run_id = :r ORDER BY r.index",
        r=run_id,
    )


def test_shards_run_on_both_nodes_and_match_a_single_node_run(
    flywheel_env: Settings,
    tiny_spec: dict,
    db_url: str,
    tmp_path: Path,
    local_cluster: LocalCluster,
) -> None:
    import ray

    from flows.flywheel_run import flywheel_run
    from tasks import context

    # One round, no warm-up: the round itself generates, verifies and trains (DDP) on the
    # cluster; a warm-up would only train a second time the same way.
    tiny_spec["rounds"] = 1
    tiny_spec.pop("warmup")
    # Half a CPU for the generator leaves half a CPU on its node: training's two Ray Train
    # workers (DDP) spread over both nodes.
    tiny_spec["resources"] = {
        "generator_cpus": 0.5,
        "train_workers": 2,
        "train_cpus_per_worker": 0.5,
        "train_placement": "SPREAD",
    }
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    spec = load_spec(spec_file)

    os.environ["FLYWHEEL_RAY_ADDRESS"] = local_cluster.start_head(num_cpus=1)
    local_cluster.add_node("second", num_cpus=1, resources={"second_node": 1})
    context.reset()
    seen: list[float] = []
    stop = threading.Event()

    def sample() -> None:  # diagnostics: free CPUs while the run goes
        while not stop.is_set():
            if ray.is_initialized():
                with contextlib.suppress(Exception):
                    seen.append(ray.available_resources().get("CPU", 0.0))
            stop.wait(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    clustered = flywheel_run(spec)
    stop.set()
    watcher.join()
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    used = query(
        db_url,
        "SELECT r.index, s.stage, s.worker_node FROM stage_shards s JOIN rounds r "
        "ON r.id = s.round_id WHERE r.run_id = :r ORDER BY 1, 2",
        r=clustered,
    )
    where = " ".join(f"{i}:{stage}@{node[:6]}" for i, stage, node in used)
    assert {node for index, _, node in used if index == 1} == nodes, (
        where,
        sorted(nodes),
        sorted(set(seen)),
    )
    trained = query(
        db_url,
        "SELECT c.training_metrics -> 'worker_nodes' FROM checkpoints c JOIN rounds r "
        "ON r.id = c.round_id WHERE r.run_id = :r AND r.index = 1",
        r=clustered,
    )
    assert [set(w) for (w,) in trained] == [nodes], trained  # DDP across the two nodes
    ray_session.shutdown()

    del os.environ["FLYWHEEL_RAY_ADDRESS"]
    context.reset()
    single = flywheel_run(spec)
    assert _digests(db_url, clustered) == _digests(db_url, single)
