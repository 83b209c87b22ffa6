"""The main example as a user runs it: `flywheel run`, then `flywheel report --json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def flywheel(*args: str, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dataflywheel.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_arithmetic_example_runs_and_reports(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "PREFECT_"))}
    env["FLYWHEEL_DATA_DIR"] = str(tmp_path / "data")
    try:
        run = flywheel("run", "examples/arithmetic-selfimprove.yaml", env=env, timeout=40 * 60)
        assert run.returncode == 0, run.stderr[-5000:]
        run_id = run.stdout.strip().splitlines()[-1]
        report = flywheel("report", run_id, "--json", env=env, timeout=300)
        assert report.returncode == 0, report.stderr
        doc = json.loads(report.stdout)
    finally:
        flywheel("server", "stop", env=env, timeout=60)
        flywheel("db", "stop", env=env, timeout=60)

    rounds = doc["rounds"]
    assert [r["index"] for r in rounds] == [0, 1, 2, 3]
    assert all(r["status"] == "succeeded" for r in rounds)
    primaries = [r["eval"]["primary"] for r in rounds if r["eval"]]
    print("held-out accuracy per round:", primaries)
    # The warm-up taught the random base model something real...
    assert rounds[0]["eval"]["primary"] > doc["baseline"]["primary"]
    # ...and the gate never let the incumbent fall more than max_drop below it.
    promoted = [r["eval"]["primary"] for r in rounds if r["promotion"] == "promoted"]
    assert all(b >= a - 0.01 for a, b in zip(promoted, promoted[1:], strict=False))
    assert doc["summary"]["promoted_primary"] >= rounds[0]["eval"]["primary"] - 0.01
