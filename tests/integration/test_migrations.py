"""Alembic migrations on real Postgres: up to head, down to base, no drift from the models."""

from __future__ import annotations

import sqlalchemy as sa

from dataflywheel.db import migrate
from dataflywheel.db.models import Base
from dataflywheel.db.session import make_engine


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_roundtrip(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    assert migrate.current(engine) is None
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    assert _tables(engine) == set(Base.metadata.tables)
    migrate.downgrade(engine, "base")
    assert migrate.current(engine) is None
    assert _tables(engine) == set()
    # And back up again: the downgrade left nothing behind that blocks a fresh upgrade.
    migrate.upgrade(engine)
    assert _tables(engine) == set(Base.metadata.tables)
    engine.dispose()


def test_models_and_migrations_do_not_drift(engine: sa.Engine) -> None:
    diff = migrate.drift(engine)
    assert diff == [], f"models and migrations differ; write a revision for: {diff}"


def test_every_step_downgrades(empty_db_url: str) -> None:
    """Walk each revision up and down one at a time, so every downgrade is exercised."""
    from alembic.script import ScriptDirectory

    engine = make_engine(empty_db_url)
    revisions = list(ScriptDirectory(str(migrate.migrations_dir())).walk_revisions("base", "heads"))
    for _ in revisions:
        migrate.upgrade(engine, "+1")
    assert migrate.current(engine) == migrate.head()
    for _ in revisions:
        migrate.downgrade(engine, "-1")
    assert migrate.current(engine) is None
    engine.dispose()
