"""``flywheel runs``: the list of runs with how far each got.

Runs in: anywhere with a database session; reads only, never commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataflywheel.db.models import Round, Run


@dataclass(frozen=True, slots=True)
class RunListing:
    """A line of ``flywheel runs``: ``rounds_planned`` counts the warm-up round too."""

    id: int
    name: str
    status: str
    rounds_done: int
    rounds_planned: int | None
    created_at: datetime


def list_runs(session: Session, *, limit: int | None = None) -> list[RunListing]:
    """Runs, newest first, with how many of their rounds succeeded."""
    done = (
        sa.select(sa.func.count())
        .where(Round.run_id == Run.id, Round.status == "succeeded")
        .correlate(Run)
        .scalar_subquery()
    )
    stmt = (
        sa.select(Run.id, Run.name, Run.status, Run.spec, Run.created_at, done)
        .order_by(Run.id.desc())
        .limit(limit)
    )
    listings = []
    for run_id, name, status, spec, created_at, rounds_done in session.execute(stmt):
        planned = (spec or {}).get("rounds")
        if isinstance(planned, int) and (spec or {}).get("warmup") is not None:
            planned += 1
        listings.append(
            RunListing(
                run_id,
                name,
                status,
                int(rounds_done),
                planned if isinstance(planned, int) else None,
                created_at,
            )
        )
    return listings
