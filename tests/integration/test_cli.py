"""The ``flywheel`` CLI as a user runs it: separate processes, a real embedded PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from tests.cli_support import flywheel


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["FLYWHEEL_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "200"
    return env


def _postgres_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(pgdata) in " ".join(cmdline):
            found.append(proc)
    return found


def test_embedded_server_is_shared_across_processes_and_stops(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    pgdata = (tmp_path / "data" / "postgres").resolve()
    first = flywheel("db", "upgrade", env=cli_env)
    assert first.returncode == 0, first.stderr
    assert "database at revision" in first.stdout

    status = flywheel("db", "status", env=cli_env)
    assert status.returncode == 0 and "running" in status.stdout
    pid = int(status.stdout.split("pid ")[1].split(")")[0])

    # A second, independent process reuses the same server: same pid, schema already at head.
    second = flywheel("db", "current", env=cli_env)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    again = flywheel("db", "status", env=cli_env)
    assert f"pid {pid}" in again.stdout

    stopped = flywheel("db", "stop", env=cli_env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert _postgres_processes(pgdata) == []
    after = flywheel("db", "status", env=cli_env)
    assert after.returncode == 3 and "stopped" in after.stdout

    # Data survives a stop: the next command restarts the server on the same cluster.
    restarted = flywheel("db", "current", env=cli_env)
    assert restarted.returncode == 0 and "up to date" in restarted.stdout
    assert flywheel("db", "stop", env=cli_env).returncode == 0


def test_unreachable_database_url_is_one_clear_error(cli_env: dict[str, str]) -> None:
    cli_env["FLYWHEEL_DATABASE_URL"] = "postgresql://flywheel:secret@127.0.0.1:9/flywheel"
    result = flywheel("db", "upgrade", env=cli_env)
    assert result.returncode == 1
    assert "FLYWHEEL_DATABASE_URL" in result.stderr
    assert "127.0.0.1:9" in result.stderr
    assert "secret" not in result.stderr  # the password is never echoed
    assert "Traceback" not in result.stderr


def test_non_postgres_url_is_refused(cli_env: dict[str, str]) -> None:
    cli_env["FLYWHEEL_DATABASE_URL"] = "sqlite:///flywheel.db"
    result = flywheel("db", "current", env=cli_env)
    assert result.returncode == 1
    assert "FLYWHEEL_DATABASE_URL" in result.stderr and "PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_data_dir_is_one_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    # Tests may run as root, for whom permission bits do not stop writes: a data directory
    # whose parent is a regular file cannot be created by anyone.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cli_env["FLYWHEEL_DATA_DIR"] = str(blocker / "data")
    result = flywheel("db", "upgrade", env=cli_env)
    assert result.returncode == 1
    assert "FLYWHEEL_DATA_DIR" in result.stderr
    assert "Traceback" not in result.stderr
    assert blocker.read_text() == ""


def test_downgrade_asks_before_dropping_tables(cli_env: dict[str, str]) -> None:
    assert flywheel("db", "upgrade", env=cli_env).returncode == 0
    refused = flywheel("db", "downgrade", "base", env=cli_env, stdin="n\n")
    assert refused.returncode == 1
    assert "up to date" in flywheel("db", "current", env=cli_env).stdout
    done = flywheel("db", "downgrade", "base", "--yes", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert "base (empty)" in done.stdout
    flywheel("db", "stop", env=cli_env)
