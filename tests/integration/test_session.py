"""Waiting for a database that restarts (``wait_for_database``), against real servers."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dataflywheel.db import embedded
from dataflywheel.db.session import DatabaseUnavailable, make_engine, wait_for_database


def test_a_server_that_answers_costs_no_wait(engine: Engine) -> None:
    start = time.monotonic()
    wait_for_database(engine, timeout_s=30)
    assert time.monotonic() - start < 5


def test_a_server_that_stays_away_is_one_clear_error(tmp_path: Path) -> None:
    gone = make_engine(f"postgresql+psycopg://postgres@/flywheel?host={tmp_path}")
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="did not answer for 1 s"):
        wait_for_database(gone, timeout_s=1)
    assert 0.5 < time.monotonic() - start < 10
    gone.dispose()


def test_a_restarted_embedded_server_is_waited_for_and_reconnected() -> None:
    # Outside pytest's temp root: the server runs as its own user (see tests/conftest.py).
    root = Path(tempfile.mkdtemp(prefix="fw-session-pg-"))
    pgdata = root / "postgres"
    server = embedded.start(pgdata)
    engine = make_engine(server.url)
    try:
        with engine.connect() as conn:
            before = conn.execute(sa.text("SELECT pg_postmaster_start_time()")).scalar_one()
        assert embedded.stop(pgdata)
        # Restarted in this process, as `flywheel db start` after `stop` in one shell would.
        restart = threading.Timer(2.0, embedded.start, args=(pgdata,))
        restart.start()
        start = time.monotonic()
        wait_for_database(engine, timeout_s=60)
        assert time.monotonic() - start > 1.5
        restart.join()
        with engine.connect() as conn:  # the pool's dead connections were replaced
            after = conn.execute(sa.text("SELECT pg_postmaster_start_time()")).scalar_one()
        assert after > before
    finally:
        engine.dispose()
        embedded.stop(pgdata)
        shutil.rmtree(root, ignore_errors=True)
