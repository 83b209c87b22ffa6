"""Prefect result persistence is off, explicitly and everywhere: every task and flow says
``persist_result=False`` (and so caches nothing), and the deployments' environment agrees.
PostgreSQL and the shard ledger are the record of finished work (docs/architecture.md);
tests/e2e/test_tiny_run.py shows a retried round and a resumed run skip it."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from prefect import Flow, Task
from prefect.cache_policies import NO_CACHE

ROOT = Path(__file__).resolve().parents[2]


def _objects(package: str) -> list[object]:
    found = []
    for path in sorted((ROOT / package).glob("*.py")):
        module = importlib.import_module(f"{package}.{path.stem}")
        found += [v for v in vars(module).values() if isinstance(v, Task | Flow)]
    return found


def test_every_task_and_flow_persists_no_result_and_caches_nothing() -> None:
    tasks = [t for t in _objects("tasks") if isinstance(t, Task)]
    flows = [f for f in _objects("flows") if isinstance(f, Flow)]
    assert {t.name for t in tasks} >= {"generate_samples", "finish_round", "rescore_samples"}
    assert {f.name for f in flows} == {"flywheel_run", "flywheel_round", "flywheel_replay",
                                       "rescore"}  # fmt: skip
    for t in tasks:
        assert t.persist_result is False, t.name
        assert t.cache_policy is NO_CACHE, t.name
    for f in flows:
        assert f.persist_result is False, f.name


def test_deployments_run_with_result_persistence_off() -> None:
    from dataflywheel.deploy import JOB_ENV

    assert JOB_ENV == {"PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false"}
    prefect_yaml = yaml.safe_load((ROOT / "infra" / "prefect.yaml").read_text())
    for deployment in prefect_yaml["deployments"]:
        assert deployment["work_pool"]["job_variables"]["env"] == JOB_ENV
