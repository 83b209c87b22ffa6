"""Bad input to ``flywheel check / replay / diff / resume``: one clear error, a non-zero exit,
and not a row written (a real PostgreSQL, the CLI in-process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from dataflywheel.cli import app

TABLES = ("runs", "rounds", "checkpoints", "datasets", "samples", "stage_shards")


@pytest.fixture
def cli_db(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", db_url)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLYWHEEL_STORE_URI", str(tmp_path / "objects"))
    return db_url


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "4242"], "run 4242 does not exist"),
        (["resume", "4242"], "run 4242 does not exist"),
        (["replay", "4242", "--round", "1"], "run 4242 does not exist"),
        (["diff", "4242:1", "4243:1"], "run 4242 has no round 1"),
    ],
)
def test_unknown_run_is_refused_and_nothing_is_written(
    cli_db: str, engine: Engine, args: list[str], message: str
) -> None:
    before = _counts(engine)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert _counts(engine) == before == dict.fromkeys(TABLES, 0)


def test_replay_of_a_missing_round_names_the_rounds_there_are(cli_db: str, engine: Engine) -> None:
    with engine.begin() as conn:
        run = conn.execute(
            sa.text("INSERT INTO runs (name, spec, spec_hash) VALUES ('x', '{}', 'h') RETURNING id")
        ).scalar_one()
        conn.execute(
            sa.text("INSERT INTO rounds (run_id, index, seed) VALUES (:r, 0, 1)"), {"r": run}
        )
    before = _counts(engine)
    result = CliRunner().invoke(app, ["replay", str(run), "--round", "3"])
    assert result.exit_code == 1
    assert f"run {run} has no round 3 (it has rounds [0])" in " ".join(result.output.split())
    unfinished = CliRunner().invoke(app, ["replay", str(run), "--round", "0"])
    assert unfinished.exit_code == 1
    assert "only a finished round can be replayed" in " ".join(unfinished.output.split())
    assert _counts(engine) == before


def test_diff_rejects_a_malformed_reference(cli_db: str) -> None:
    result = CliRunner().invoke(app, ["diff", "12", "13:1"])
    assert result.exit_code == 2
    assert "expected RUN_ID:ROUND" in result.output


def test_a_ray_cluster_that_does_not_answer_is_refused_before_anything_runs(
    cli_db: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FLYWHEEL_RAY_ADDRESS", f"127.0.0.1:{port}")
    spec = Path(__file__).parents[2] / "examples" / "arithmetic-selfimprove.yaml"
    result = CliRunner().invoke(app, ["run", str(spec)])
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert f"the Ray cluster at FLYWHEEL_RAY_ADDRESS=127.0.0.1:{port} does not answer" in flat
    assert "unset FLYWHEEL_RAY_ADDRESS" in flat
    assert _counts(engine) == dict.fromkeys(TABLES, 0)
