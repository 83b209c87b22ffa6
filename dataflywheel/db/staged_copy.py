"""The machinery of bulk ingestion: a batch COPYed into a staging table, then moved.

Runs in: anywhere with a database connection (Prefect tasks, Ray workers). Knows nothing of
samples or prompts: :mod:`dataflywheel.db.ingest` describes each kind of row with a
:class:`CopyPlan` and calls :func:`ingest_batch`. Every function works inside the caller's
transaction and never commits.

A batch is streamed with ``COPY`` into a temporary staging table, then moved into the real
table by the plan's ``INSERT ... SELECT ... ON CONFLICT ... DO NOTHING``, all inside a
savepoint: a bad row leaves no partial rows, the error names the bad rows by their position
in the input, and the caller's transaction stays usable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

DbHandle = Session | Connection | psycopg.Connection[Any]
"""What the ingestion functions accept: the caller's session or connection."""

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class IngestCounts:
    """How a batch went: rows received, rows inserted, the rest skipped as duplicates (of
    rows already in the table or of earlier rows in the same batch)."""

    received: int
    inserted: int

    @property
    def skipped(self) -> int:
        return self.received - self.inserted


class IngestError(ValueError):
    """A batch was rejected and nothing of it was inserted; the message names the bad rows
    by their 0-based position in the input."""

    def __init__(
        self,
        message: str,
        *,
        table: str,
        positions: tuple[int, ...] = (),
        constraint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.table = table
        self.positions = positions
        self.constraint = constraint


@dataclass(frozen=True)
class CopyPlan:
    """How one kind of row travels: the staging table's columns (in the order of the row
    tuples), the statement that moves staged rows into the real table, and the columns that
    name a bad row in an error."""

    table: str
    staging: str
    columns: tuple[tuple[str, str], ...]
    insert_sql: str
    key_columns: tuple[str, ...]
    # For a NOT NULL column that is derived rather than copied: what a NULL there means and
    # the condition that finds the staged rows responsible.
    null_means: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def driver_connection(db: DbHandle) -> psycopg.Connection[Any]:
    """The psycopg connection under ``db``, inside the caller's transaction.

    A ``Session`` is flushed first: COPY bypasses the ORM, so rows the caller added but has
    not flushed (a run, a round) must reach the server before samples reference them.
    """
    if isinstance(db, Session):
        db.flush()
        pg = db.connection().connection.driver_connection
    elif isinstance(db, Connection):
        # Begin as SQLAlchemy's autobegin would: otherwise the caller's conn.commit() finds
        # no transaction to commit and the rows are rolled back when the connection closes.
        if not db.in_transaction():
            db.begin()
        pg = db.connection.driver_connection
    else:
        pg = db
    if not isinstance(pg, psycopg.Connection):
        raise TypeError(f"bulk ingestion needs a psycopg 3 connection, got {type(pg).__name__}")
    if pg.autocommit:
        raise ValueError(
            "bulk ingestion needs a connection in a transaction (autocommit is on); the caller "
            "owns the transaction, e.g. a session from dataflywheel.db.session.session_scope"
        )
    return pg


def ingest_batch(
    db: DbHandle,
    plan: CopyPlan,
    rows: Iterable[_T],
    convert: Callable[[_T], tuple[object, ...]],
    fetch: Callable[[psycopg.Cursor[Any]], _R] | None = None,
) -> tuple[IngestCounts, _R | None]:
    """COPY ``rows`` (each turned into a tuple by ``convert``) into ``plan``'s table; with
    ``fetch``, also what it reads from the staging table after the move."""
    pg = driver_connection(db)
    columns = ", ".join(f"{name} {type_}" for name, type_ in plan.columns)
    with pg.cursor() as cur:
        # The savepoint makes the batch atomic without touching the caller's earlier work.
        cur.execute("SAVEPOINT dataflywheel_ingest")
        try:
            # ON COMMIT DROP only as a safety net: the table is dropped (or rolled back) below,
            # so a caller may ingest several batches in one transaction.
            cur.execute(f"CREATE TEMP TABLE {plan.staging} ({columns}) ON COMMIT DROP")
            received = _copy(cur, plan, rows, convert)
            cur.execute("SAVEPOINT dataflywheel_ingest_move")
            try:
                cur.execute(plan.insert_sql)
            except errors.IntegrityError as exc:
                # Back to before the INSERT, where the staged rows can still be inspected.
                cur.execute("ROLLBACK TO SAVEPOINT dataflywheel_ingest_move")
                raise _explain(cur, plan, exc) from exc
            inserted = cur.rowcount
            result = fetch(cur) if fetch is not None else None
            cur.execute(f"DROP TABLE {plan.staging}")
        except BaseException:
            _rollback_to_savepoint(cur)
            raise
        cur.execute("RELEASE SAVEPOINT dataflywheel_ingest")
    return IngestCounts(received=received, inserted=inserted), result


def _rollback_to_savepoint(cur: psycopg.Cursor[Any]) -> None:
    try:
        cur.execute("ROLLBACK TO SAVEPOINT dataflywheel_ingest")
        cur.execute("RELEASE SAVEPOINT dataflywheel_ingest")
    except psycopg.Error:
        # The connection itself is gone; the error being raised says more than this one.
        pass


_COPY_LINE = re.compile(r"\bline (\d+)\b")


def _copy(
    cur: psycopg.Cursor[Any],
    plan: CopyPlan,
    rows: Iterable[_T],
    convert: Callable[[_T], tuple[object, ...]],
) -> int:
    position = 0
    try:
        with cur.copy(f"COPY {plan.staging} FROM STDIN") as copy:
            for position, row in enumerate(rows):  # noqa: B007 - read when a row fails
                copy.write_row(convert(row))
    except (psycopg.Error, TypeError, ValueError) as exc:
        # The server reports "line N" (1-based) of the COPY data; an error without a
        # SQLSTATE was raised here, converting the row at `position`.
        context = exc.diag.context if isinstance(exc, psycopg.Error) else None
        line = _COPY_LINE.search(context or "")
        server_side = isinstance(exc, psycopg.Error) and exc.sqlstate is not None
        positions = (int(line.group(1)) - 1,) if line else () if server_side else (position,)
        where = f"input row {positions[0]}" if positions else "a row"
        raise IngestError(
            f"{plan.table} batch rejected, nothing inserted: {where} could not be copied: "
            f"{str(exc).strip()}",
            table=plan.table,
            positions=positions,
        ) from exc
    return cur.rowcount


def _explain(cur: psycopg.Cursor[Any], plan: CopyPlan, exc: errors.IntegrityError) -> IngestError:
    """Find the staged rows that broke ``exc``'s constraint, to name them by position."""
    diag = exc.diag
    constraint = diag.constraint_name
    condition: str | None = None
    show = list(plan.key_columns)
    reason = (diag.message_detail or diag.message_primary or str(exc)).strip().rstrip(".")
    if isinstance(exc, errors.ForeignKeyViolation) and constraint:
        column, referenced = _foreign_key(cur, constraint)
        if column in dict(plan.columns):
            condition = f"NOT EXISTS (SELECT 1 FROM {referenced} r WHERE r.id = staged.{column})"
            show.append(column)
    elif isinstance(exc, errors.CheckViolation) and constraint:
        cur.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conname = %s AND conrelid = %s::regclass",
            (constraint, plan.table),
        )
        found = cur.fetchone()
        if found:
            definition = found[0].removeprefix("CHECK ").removesuffix(" NOT VALID")
            condition = f"({definition}) IS FALSE"
            reason = f"{definition} is false"
    elif isinstance(exc, errors.NotNullViolation) and diag.column_name:
        column = diag.column_name
        if column in plan.null_means:
            reason, condition = plan.null_means[column]
        elif column in dict(plan.columns):
            condition = f"staged.{column} IS NULL"
            show.append(column)
    positions: tuple[int, ...] = ()
    described = ""
    if condition is not None:
        shown = list(dict.fromkeys(show))
        # ctid order is input order: the staging table is fresh and only ever appended to.
        cur.execute(
            f"SELECT position, count(*) OVER (), {', '.join(shown)} FROM ("
            f" SELECT row_number() OVER (ORDER BY ctid) - 1 AS position, *"
            f" FROM {plan.staging}) AS staged"
            f" WHERE {condition} ORDER BY position LIMIT 5"
        )
        found_rows = cur.fetchall()
        positions = tuple(int(row[0]) for row in found_rows)
        if found_rows:
            described = ". Bad input rows (0-based position in the batch): " + ", ".join(
                f"{row[0]} ({', '.join(f'{c}={v!r}' for c, v in zip(shown, row[2:], strict=True))})"
                for row in found_rows
            )
            if found_rows[0][1] > len(found_rows):
                described += f", ... ({found_rows[0][1]} in all)"
    return IngestError(
        f"{plan.table} batch rejected, nothing inserted: "
        f"{constraint or diag.column_name or type(exc).__name__}: {reason}{described}",
        table=plan.table,
        positions=positions,
        constraint=constraint,
    )


def _foreign_key(cur: psycopg.Cursor[Any], constraint: str) -> tuple[str, str]:
    """(local column, referenced table) of a single-column foreign key."""
    cur.execute(
        "SELECT a.attname, c.confrelid::regclass::text FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
        " WHERE c.conname = %s AND c.contype = 'f'",
        (constraint,),
    )
    row = cur.fetchone()
    if row is None:
        raise LookupError(f"foreign key {constraint} not found")
    return str(row[0]), str(row[1])
