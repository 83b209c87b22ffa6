"""Schema migrations through Alembic: upgrade, downgrade, current revision, drift check.

Runs in: the CLI process and the test suite. The schema is never built with
``create_all``; everything goes through the revisions in ``migrations/versions``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from dataflywheel.db.models import Base


def migrations_dir() -> Path:
    """The ``migrations`` package's directory (installed with the distribution)."""
    spec = importlib.util.find_spec("migrations")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the 'migrations' package is not importable; install the project "
            "(pip install -e .) from the repository root"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # Escape '%' because Config interpolates values (URL-encoded socket paths contain it).
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str = "-1") -> None:
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def current(engine: Engine) -> str | None:
    """The database's revision, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str:
    script = ScriptDirectory(str(migrations_dir()))
    result = script.get_current_head()
    assert result is not None, "migrations/versions holds no revision"
    return result


def drift(engine: Engine) -> list[object]:
    """Differences autogenerate would write between the models and the database (empty when
    the migrations describe the models exactly)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))
