"""A local Prefect server for people without one, backed by our PostgreSQL (never SQLite).

Runs in: the CLI process (``flywheel run``, ``flywheel server``). When no Prefect API is
configured (``FLYWHEEL_PREFECT_API_URL`` / ``PREFECT_API_URL``), a ``prefect server start``
process is launched on a free loopback port, its state kept in a ``prefect`` database on the
same PostgreSQL server as ours, and recorded in ``<data_dir>/prefect/server.json`` so later
commands reuse it (Prefect's per-process ephemeral server takes many seconds to start in
every process, and sometimes times out). ``flywheel server stop`` ends it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

from dataflywheel.config import Settings
from dataflywheel.db.session import resolve_database_url

PREFECT_DATABASE = "prefect"
START_TIMEOUT_S = 90.0


class PrefectServerError(RuntimeError):
    """The local Prefect server could not be started; the message says what to do."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


def configured_api_url(settings: Settings) -> str | None:
    return settings.prefect_api_url or os.environ.get("PREFECT_API_URL") or None


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(api_url.rstrip("/") + "/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _state_file(settings: Settings) -> Path:
    return settings.resolved_data_dir / "prefect" / "server.json"


def running(settings: Settings) -> ServerInfo | None:
    """The server a previous command started, if it is still alive and healthy."""
    path = _state_file(settings)
    if not path.exists():
        return None
    try:
        info = ServerInfo(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None
    return info if healthy(info.api_url) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_database_url(settings: Settings) -> str:
    """An asyncpg URL of the ``prefect`` database on our server (created if missing)."""
    url = make_url(resolve_database_url(settings))
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (PREFECT_DATABASE,)
            ).fetchone()
            if not exists:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(f'CREATE DATABASE "{PREFECT_DATABASE}"')
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PrefectServerError(
            f"cannot create the '{PREFECT_DATABASE}' database for the local Prefect server "
            f"({exc}); create it by hand, or set FLYWHEEL_PREFECT_API_URL to a running server"
        ) from exc
    return url.set(drivername="postgresql+asyncpg", database=PREFECT_DATABASE).render_as_string(
        hide_password=False
    )


def start(settings: Settings) -> ServerInfo:
    """Start a server (or return the running one) and wait until it is healthy."""
    existing = running(settings)
    if existing is not None:
        return existing
    home = settings.resolved_data_dir / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": prefect_database_url(settings),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    log = (home / "server.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],  # fmt: skip
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # outlives this command; `flywheel server stop` ends it
    )
    info = ServerInfo(pid=process.pid, port=port)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PrefectServerError(
                f"the Prefect server exited with status {process.returncode}; see {home}/server.log"
            )
        if healthy(info.api_url):
            _state_file(settings).write_text(json.dumps({"pid": info.pid, "port": info.port}))
            return info
        time.sleep(0.5)
    _terminate(process.pid)
    raise PrefectServerError(
        f"the Prefect server did not become healthy within {START_TIMEOUT_S:.0f} s; see "
        f"{home}/server.log, or set FLYWHEEL_PREFECT_API_URL to a running server"
    )


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop(settings: Settings) -> bool:
    """Stop the server a previous command started; False if none was running."""
    path = _state_file(settings)
    if not path.exists():
        return False
    try:
        info = ServerInfo(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        path.unlink(missing_ok=True)
        return False
    path.unlink(missing_ok=True)
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return False
    _terminate(info.pid)
    return True


def ensure_api(settings: Settings) -> str:
    """The Prefect API URL to use: the configured one (checked), else a local server's."""
    configured = configured_api_url(settings)
    if configured:
        if not healthy(configured, timeout=5.0):
            raise PrefectServerError(
                f"the Prefect API at {configured} does not answer; start it, or unset "
                "FLYWHEEL_PREFECT_API_URL/PREFECT_API_URL to use a local server"
            )
        return configured
    return start(settings).api_url
