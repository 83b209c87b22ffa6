"""Per-process handles the tasks share: settings, the engine, the object store, Ray.

Runs in: the flow process (Prefect tasks run in its threads). Each handle is created once per
process on first use and reused, so a task costs no reconnect; nothing is created at import.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from dataflywheel.config import Settings
from dataflywheel.db.session import engine_from_settings, session_scope, wait_for_database
from dataflywheel.spec import RunSpec
from dataflywheel.store import ObjectStore, store_from_settings


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings()


@lru_cache(maxsize=1)
def engine() -> Engine:
    return engine_from_settings(settings())


@lru_cache(maxsize=1)
def store() -> ObjectStore:
    return store_from_settings(settings())


@contextmanager
def session() -> Iterator[Session]:
    """A unit of work: commits when the block ends, rolls back on error. It begins only once
    the database answers: a server that restarts between two units of work costs a wait
    (up to ``FLYWHEEL_DATABASE_RECONNECT_S``), not a failed task; one that goes away during
    a unit of work fails it, and the task's Prefect retry waits here."""
    handle = engine()
    wait_for_database(handle, settings().database_reconnect_s)
    with session_scope(handle) as s:
        yield s


def connect_ray() -> None:
    """Connect this process to Ray (once; later calls from any thread return at once). A flow
    calls it first, so that no two of its concurrent tasks race to start Ray."""
    from workers.driver import ray_session

    ray_session.connect(settings())


def check_cluster(spec: RunSpec) -> None:
    """Refuse a run whose GPU reservations the connected Ray cluster cannot grant
    (``PlacementError``, naming the fields), before anything is registered."""
    from workers.driver import placement

    placement.check_cluster(spec)


def reset() -> None:
    """Forget every handle (tests change the environment between runs)."""
    if engine.cache_info().currsize:
        engine().dispose()
    for handle in (settings, engine, store):
        handle.cache_clear()
