"""Shared fixtures: a real PostgreSQL for the whole session, a fresh migrated database per test,
and (on first use) one real Prefect server for the session.

Runs in: the test process (under pytest-xdist, each of them: every worker has its own
server and Prefect server). With ``FLYWHEEL_TEST_DATABASE_URL`` set (an admin URL of any
Postgres server) the tests use that server; otherwise an embedded PostgreSQL is started in a
temporary directory and stopped at the end. Each test gets its own database cloned from a
template that Alembic migrated once, so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import Engine, make_url

from dataflywheel.config import Settings
from dataflywheel.db import embedded, migrate
from dataflywheel.db.session import make_engine

# This process starts and stops Ray many times (each in-process flow test, each module with a
# Ray of its own). Ray 2.60's OpenTelemetry metrics exporter of a stopped session stays
# alive in the process and keeps exporting to its dead metrics agent: one more exporter per
# session ("Failed to export metrics to the metrics agent", more each session, in the
# driver's log), whose gRPC "default-executor" threads later crashed this process with a
# segmentation fault in libc while an unrelated test ran (CI stop 23; here, 2026-12-07). A
# `flywheel` command starts one Ray and exits with it, so users never restart Ray in one
# process; this process does not collect Ray's metrics (the processes it starts inherit it).
os.environ.setdefault("RAY_enable_metrics_collection", "0")

# `make test TEST_WORKERS=2` runs the suite in two processes (xdist, `--dist loadgroup`). A module's
# tests run in one process, in order, as they do in one pytest process (module-scoped
# fixtures are built once, and a test may rely on what an earlier one left in them). Tests
# of these modules also use something the machine has once, so each group runs in one
# process, one test after another: a vLLM engine (two cannot start side by side on one CPU
# machine; seen with `-n 2`: "Engine core initialization failed"), and the code sandbox's
# uid range (its tests count every sandboxed process on the machine).
SERIAL_GROUPS = {
    "vllm": (
        "tests/integration/test_vllm_backend.py",
        "tests/integration/test_openai_backend.py",
        "tests/e2e/test_vllm_run.py",
    ),
    "sandbox": (
        "tests/integration/test_code_verifier.py",
        "tests/integration/test_humaneval_peer.py",
        "tests/integration/test_sandbox_hostile.py",
        "tests/unit/test_sandbox_steps.py",
    ),
}
_GROUP_OF = {module: group for group, modules in SERIAL_GROUPS.items() for module in modules}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups from the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put each test in its module's group (or its serial group), and the modules with slow
    tests first, so that the longest tests start while the other process still has short
    ones to run, instead of one of them running alone at the end."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # one process: the order and grouping pytest gives
    slow_modules = set()
    for item in items:
        module = item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(_GROUP_OF.get(module, module)))
        if item.get_closest_marker("slow"):
            slow_modules.add(module)
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow_modules)


TEMPLATE_DB = "flywheel_template"
_counter = itertools.count()


def _admin_url(url: str) -> str:
    """libpq URL of the same server's ``postgres`` database."""
    return (
        make_url(url)
        .set(drivername="postgresql", database="postgres")
        .render_as_string(hide_password=False)
    )


def _with_database(url: str, name: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )


def server_tmp(prefix: str) -> Path:
    """A fresh directory for a server that runs as another user, outside pytest's temp root.

    Every pytest session that starts on the machine resets ``/tmp/pytest-of-<user>`` to mode
    0700. Run as root, the embedded PostgreSQL runs as its own system user, so a server whose
    data directory lies below that root loses it the moment another session starts, and
    PANICs at its next checkpoint ("could not open file global/pg_control: Permission
    denied"), failing whatever test is running (seen as the flaky test_ray_cluster.py: its
    minutes-long run usually overlapped another session's start on this shared machine).
    """
    return Path(tempfile.mkdtemp(prefix=prefix, dir=tempfile.gettempdir()))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """SQLAlchemy URL of a real PostgreSQL server for this test session."""
    configured = os.environ.get("FLYWHEEL_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    root = server_tmp("fw-test-pg-")
    pgdata = root / "postgres"
    server = embedded.start(pgdata)
    try:
        yield server.url
    finally:
        embedded.stop(pgdata)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_url: str) -> Iterator[str]:
    """A database migrated to head once; per-test databases are cloned from it. One per test
    process: with ``FLYWHEEL_TEST_DATABASE_URL`` the xdist workers share a server, and one
    must not drop the template another is cloning."""
    name = f"{TEMPLATE_DB}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    admin = _admin_url(pg_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(_with_database(pg_url, name))
    migrate.upgrade(engine)
    engine.dispose()
    yield name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_database(pg_url: str, template: str | None) -> str:
    """Create a uniquely named database (optionally from a template); return its URL."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    admin = _admin_url(pg_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        clause = f' TEMPLATE "{template}"' if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
    return _with_database(pg_url, name)


def drop_database(pg_url: str, url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(_admin_url(pg_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(pg_url: str, template_db: str) -> Iterator[str]:
    """URL of a fresh database at the head revision, dropped after the test."""
    url = new_database(pg_url, template_db)
    yield url
    drop_database(pg_url, url)


@pytest.fixture
def empty_db_url(pg_url: str) -> Iterator[str]:
    """URL of a fresh, empty database (no schema), dropped after the test."""
    url = new_database(pg_url, None)
    yield url
    drop_database(pg_url, url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def prefect_api(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Prefect server for the session (its state in a `prefect` database on the test
    PostgreSQL server). One per session because Prefect's client keeps the API URL it first
    saw for the life of the process."""
    from dataflywheel import prefect_server

    settings = Settings(data_dir=tmp_path_factory.mktemp("prefect"), database_url=pg_url)
    info = prefect_server.start(settings)
    try:
        yield info.api_url
    finally:
        prefect_server.stop(settings)
