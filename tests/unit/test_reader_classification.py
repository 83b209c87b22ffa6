"""Readers' classification of the tables, role names and connection URLs (no database)."""

from __future__ import annotations

import pytest

from dataflywheel.db import readers
from dataflywheel.db.models import Base


def test_every_table_of_the_models_is_classified() -> None:
    """A new table in models.py must be named in readers.READABLE (analysts may SELECT it) or
    readers.PRIVATE (with the reason they may not); until then this fails."""
    tables = set(Base.metadata.tables)
    unclassified = tables - set(readers.READABLE) - set(readers.PRIVATE)
    assert not unclassified, (
        f"classify {sorted(unclassified)} in dataflywheel/db/readers.py: add each to READABLE "
        "or to PRIVATE with the reason analysts must not read it"
    )


def test_classification_is_disjoint_and_current() -> None:
    assert not set(readers.READABLE) & set(readers.PRIVATE)
    assert len(readers.READABLE) == len(set(readers.READABLE))
    tables = set(Base.metadata.tables)
    assert set(readers.READABLE) <= tables, "READABLE names a table the models no longer have"
    # alembic_version is Alembic's own table, not a model.
    assert set(readers.PRIVATE) - {"alembic_version"} <= tables
    assert {"api_keys", "stage_shards", "alembic_version"} <= set(readers.PRIVATE)
    assert "samples" in readers.READABLE


@pytest.mark.parametrize("name", ["alice", "_etl", "analyst_2", "a" * 63])
def test_plain_names_are_accepted(name: str) -> None:
    readers.check_name(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "lowercase"),
        ("Alice", "lowercase"),
        ("2fast", "lowercase"),
        ("bob; DROP TABLE samples", "lowercase"),
        ("a-b", "lowercase"),
        ("a" * 64, "lowercase"),
        ("pg_monitor", "reserved"),
        (readers.READERS_GROUP, "reserved"),
    ],
)
def test_other_names_are_refused(name: str, reason: str) -> None:
    with pytest.raises(readers.ReaderError, match=reason):
        readers.check_name(name)


@pytest.mark.parametrize(
    ("database_url", "password", "expected"),
    [
        (  # the embedded server: its Unix socket directory travels as the host parameter
            "postgresql+psycopg://postgres@/flywheel?host=/home/me/.flywheel/postgres",
            None,
            "postgresql://alice@/flywheel?host=/home/me/.flywheel/postgres",
        ),
        (  # a space in the socket path must reach libpq as %20 (it reads '+' literally)
            "postgresql+psycopg://postgres@/flywheel?host=/tmp/my%20data/postgres",
            None,
            "postgresql://alice@/flywheel?host=/tmp/my%20data/postgres",
        ),
        (
            "postgresql+psycopg://flywheel:admin-secret@db.example.com:5433/fw?sslmode=require",
            "p@ss:w/rd",
            "postgresql://alice:p%40ss%3Aw%2Frd@db.example.com:5433/fw?sslmode=require",
        ),
        (
            "postgresql://flywheel@[::1]:5432/flywheel",
            None,
            "postgresql://alice@[::1]:5432/flywheel",
        ),
    ],
)
def test_reader_url_keeps_server_and_database(
    database_url: str, password: str | None, expected: str
) -> None:
    assert readers.reader_url(database_url, "alice", password) == expected
