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
from dataflywheel.db.session import engine_from_settings, session_scope
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
    """A unit of work: commits when the block ends, rolls back on error."""
    with session_scope(engine()) as s:
        yield s


def reset() -> None:
    """Forget every handle (tests change the environment between runs)."""
    if engine.cache_info().currsize:
        engine().dispose()
    for handle in (settings, engine, store):
        handle.cache_clear()
