"""What the end-to-end tests read back from a run's database: every invariant violation of a
run, as text, and plain SQL query results."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataflywheel.config import Settings
from dataflywheel.db import invariants
from dataflywheel.db.session import make_engine
from dataflywheel.store import store_from_settings


def violations(db_url: str, settings: Settings, run_id: int) -> list[str]:
    """What `flywheel check RUN_ID` reports: row invariants, then objects and digests."""
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            found = invariants.check_run(session, run_id)
            found += invariants.check_objects(session, run_id, store_from_settings(settings))
    finally:
        engine.dispose()
    return [str(v) for v in found]


def query(db_url: str, sql: str, **params: object) -> list[tuple]:
    """The rows of one SQL query, as tuples, on a connection of its own."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params).all()]
    finally:
        engine.dispose()
