"""Bad input to ``flywheel rescore``: one clear error naming what to fix, exit 1, no row
written (a real PostgreSQL, the CLI in-process). The rescore itself is exercised end to end
in tests/e2e/test_recipe_examples.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from dataflywheel.cli import app

SPEC = {
    "model": {"source": "smollm2"},
    "prompts": {"kind": "builtin", "family": "word_problems"},
    "verification": {"verifiers": [{"name": "exact_answer"}]},
}


@pytest.fixture
def run_id(db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", db_url)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLYWHEEL_STORE_URI", str(tmp_path / "objects"))
    with engine.begin() as conn:
        return conn.execute(
            sa.text("INSERT INTO runs (name, spec, spec_hash) VALUES ('x', :s, 'h') RETURNING id"),
            {"s": json.dumps(SPEC)},
        ).scalar_one()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["4242", "--verifier", "exact_answer"], "run 4242 does not exist"),
        (["{run}", "--verifier", "numeric"], "--verifier 'numeric': run's spec has verifiers"),
        (["{run}"], "name at least one verifier"),
        (["{run}", "-v", "exact_answer", "--purpose", "test"], "--purpose: ['test'] unknown"),
        (["{run}", "--config", "{bad}"], "model folder"),
        (["{run}", "--config", "{missing}"], "cannot read a verifier configuration"),
    ],
)
def test_bad_rescore_requests_are_one_clear_error(
    run_id: int, engine: Engine, tmp_path: Path, args: list[str], message: str
) -> None:
    bad = tmp_path / "rm.yaml"
    bad.write_text("name: reward_model\nmodel: no/such/folder\n")
    values = {"run": run_id, "bad": bad, "missing": tmp_path / "absent.yaml"}
    result = CliRunner().invoke(app, ["rescore", *(a.format(**values) for a in args)])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM scores")).scalar_one() == 0
