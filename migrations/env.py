"""Alembic environment: runs migrations against the configured or embedded Postgres.

Runs in: the CLI process (``flywheel db ...``), the test suite and the docker-compose
``migrate`` one-shot service. The URL comes from the Alembic config's
``sqlalchemy.url`` when the caller set it, else from ``FLYWHEEL_DATABASE_URL``, else from
the embedded server. After any revision is applied (up or down), the read-only analysts'
grants are applied again where their group role exists (:mod:`dataflywheel.db.readers`).
"""

from __future__ import annotations

from alembic import context

from dataflywheel.config import Settings
from dataflywheel.db import readers
from dataflywheel.db.models import Base
from dataflywheel.db.session import make_engine, resolve_database_url

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or resolve_database_url(Settings())


def run_migrations_offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True, compare_type=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    steps: list[object] = []
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        on_version_apply=lambda **kw: steps.append(kw["step"]),
    )
    with context.begin_transaction():
        context.run_migrations()
        if steps:
            # Readers' grants are an explicit list applied afresh: a table a revision added
            # stays private unless readers.READABLE names it, one a revision dropped leaves
            # nothing behind. In the migration's transaction, so both commit together.
            readers.reapply_grants(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
