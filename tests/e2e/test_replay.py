"""Invariants of a real tiny run, and a deterministic replay of its round 1.

A real run (tiny model, real Prefect server, local Ray, PostgreSQL, local store), then:
``flywheel check`` passes; ``flywheel replay RUN --round 1`` creates a new run marked as a
replay whose round 1 reproduces the selected dataset digest and the checkpoint digest
exactly (CPU, fp32); ``flywheel diff`` agrees; a version mismatch warns (and ``--strict``
refuses); a replay whose inputs left the store and a damaged run are both caught.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from invariant_support import violations
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.config import Settings
from dataflywheel.db.session import make_engine
from dataflywheel.spec import load_spec

pytestmark = pytest.mark.slow


def _one(db_url: str, sql: str, **params: object) -> object:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def test_check_replay_and_diff_of_a_tiny_run(
    flywheel_env: Settings, tiny_spec: dict, db_url: str, tmp_path: Path
) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    from flows.flywheel_run import flywheel_run

    run_id = flywheel_run(load_spec(spec_file))
    assert violations(db_url, flywheel_env, run_id) == []
    cli = CliRunner()
    checked = cli.invoke(app, ["check", str(run_id)])
    assert checked.exit_code == 0, checked.output
    assert "all invariants hold" in checked.output

    replayed = cli.invoke(app, ["replay", str(run_id), "--round", "1"])
    assert replayed.exit_code == 0, replayed.output
    assert "WARNING" not in replayed.output  # same code, same packages
    replay_id = int(replayed.stdout.strip().splitlines()[-1])
    assert replay_id != run_id
    source_round = _one(db_url, "SELECT id FROM rounds WHERE run_id = :r AND index = 1", r=run_id)
    assert (
        _one(db_url, "SELECT replay_of_round_id FROM runs WHERE id = :r", r=replay_id)
        == source_round
    )
    assert _one(db_url, "SELECT status FROM runs WHERE id = :r", r=replay_id) == "succeeded"

    # Bit-for-bit: the selected dataset and the trained weights of round 1 are identical,
    # while every row of the replayed round is new.
    digests = (
        "SELECT d.digest || ' ' || c.digest FROM rounds r JOIN datasets d ON d.round_id = r.id "
        "JOIN checkpoints c ON c.round_id = r.id WHERE r.run_id = :r AND r.index = 1"
    )
    assert _one(db_url, digests, r=run_id) == _one(db_url, digests, r=replay_id)
    assert (
        _one(
            db_url,
            "SELECT count(*) FROM samples s JOIN rounds r ON r.id = s.round_id "
            "WHERE r.run_id = :r AND r.index = 1",
            r=replay_id,
        )
        == 36 + 10
    )
    assert violations(db_url, flywheel_env, replay_id) == []
    same = cli.invoke(app, ["diff", f"{run_id}:1", f"{replay_id}:1", "--json"])
    assert same.exit_code == 0, same.output
    assert '"identical": true' in same.stdout
    other = cli.invoke(app, ["diff", f"{run_id}:1", f"{run_id}:2"])
    assert other.exit_code == 3 and "differs" in other.output

    runs_before = _one(db_url, "SELECT count(*) FROM runs")
    # A manifest that names other package versions: a loud warning; --strict refuses.
    _one(
        db_url,
        "UPDATE rounds SET manifest = jsonb_set(manifest, '{packages,torch}', '\"0.0.1\"') "
        "WHERE run_id = :r AND index = 2 RETURNING 1",
        r=run_id,
    )
    strict = cli.invoke(app, ["replay", str(run_id), "--round", "2", "--strict"])
    assert strict.exit_code == 1
    flat = " ".join(strict.output.split())
    assert "WARNING" in flat and "package torch: 0.0.1 ->" in flat
    assert "nothing was written" in flat

    # Inputs gone from the store: a clear error naming them, and no new run.
    warmup_dataset = _one(
        db_url,
        "SELECT d.object_key FROM datasets d JOIN rounds r ON r.id = d.round_id "
        "WHERE r.run_id = :r AND r.index = 0",
        r=run_id,
    )
    Path(flywheel_env.resolved_store_uri, str(warmup_dataset)).unlink()
    gone = cli.invoke(app, ["replay", str(run_id), "--round", "1"])
    assert gone.exit_code == 1
    flat = " ".join(gone.output.split())
    assert "inputs no longer in the object store" in flat and str(warmup_dataset) in flat
    assert _one(db_url, "SELECT count(*) FROM runs") == runs_before

    # The checker fails loudly on a damaged run: the missing object and a lost score.
    _one(
        db_url,
        "DELETE FROM scores WHERE id = (SELECT x.id FROM scores x JOIN samples s ON "
        "s.id = x.sample_id JOIN rounds r ON r.id = s.round_id WHERE r.run_id = :r "
        "AND r.index = 2 AND s.purpose = 'train' LIMIT 1) RETURNING 1",
        r=run_id,
    )
    found = violations(db_url, flywheel_env, run_id)
    assert any(v.startswith("[object_missing]") and str(warmup_dataset) in v for v in found)
    assert any(v.startswith("[scores] round 2:") for v in found), found
    broken = cli.invoke(app, ["check", str(run_id)])
    assert broken.exit_code == 1 and "invariant(s) violated" in broken.output
