"""The main example as a user runs it: `flywheel run`, then `flywheel report --json`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.cli_support import flywheel
from tests.conftest import server_tmp

# The whole example (warm-up + 2 rounds of 2 peers) takes 4-15 min on 2 cores, by machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(45 * 60)]

ROOT = Path(__file__).resolve().parents[2]


def test_arithmetic_example_runs_and_reports() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "PREFECT_"))}
    # Outside pytest's temp root, which a pytest session starting meanwhile on this machine
    # would make unreadable to the embedded PostgreSQL (tests/conftest.py: server_tmp).
    root = server_tmp("fw-example-")
    env["FLYWHEEL_DATA_DIR"] = str(root / "data")
    try:
        run = flywheel(
            "run", "examples/arithmetic-selfimprove.yaml", env=env, timeout=40 * 60, cwd=ROOT
        )
        assert run.returncode == 0, run.stderr[-5000:]
        run_id = run.stdout.strip().splitlines()[-1]
        report = flywheel("report", run_id, "--json", env=env, timeout=300, cwd=ROOT)
        assert report.returncode == 0, report.stderr
        doc = json.loads(report.stdout)
    finally:
        flywheel("server", "stop", env=env, timeout=60, cwd=ROOT)
        flywheel("db", "stop", env=env, timeout=60, cwd=ROOT)
        shutil.rmtree(root, ignore_errors=True)

    rounds = doc["rounds"]
    spec = yaml.safe_load((ROOT / "examples/arithmetic-selfimprove.yaml").read_text())
    # Round 0 is the labelled warm-up; then the spec's self-labelled rounds.
    assert [r["index"] for r in rounds] == list(range(spec["rounds"] + 1))
    assert all(r["status"] == "succeeded" for r in rounds)
    primaries = [r["eval"]["primary"] for r in rounds if r["eval"]]
    print("held-out accuracy per round:", primaries)
    # The warm-up taught the random base model something real...
    assert rounds[0]["eval"]["primary"] > doc["baseline"]["primary"]
    # ...every self-labelled round improved on the one before (the target: rising
    # round over round, by at least 20 points from the first round in the report to the last;
    # CPU fp32 runs are deterministic, so this is the measured curve of docs/results.md)...
    assert all(b > a for a, b in zip(primaries, primaries[1:], strict=False)), primaries
    assert primaries[-1] - primaries[0] >= 0.20, primaries
    # ...and the pseudo-labels came from the peers' vote, not from the references.
    assert all(r["kept"] > 0 for r in rounds[1:])
    promoted = [r["eval"]["primary"] for r in rounds if r["promotion"] == "promoted"]
    assert doc["summary"]["promoted_primary"] == promoted[-1] == primaries[-1]
