"""Bulk ingestion of prompts, samples and scores through PostgreSQL ``COPY``.

Runs in: Prefect tasks and Ray workers that persist results (anywhere with a database
connection). Every function takes the caller's SQLAlchemy ``Session``/``Connection`` (or a
non-autocommit psycopg connection) and never commits: the caller owns the transaction.

Each batch is streamed with ``COPY`` into a temporary staging table, then moved into the real
table with ``INSERT ... SELECT ... ON CONFLICT ON CONSTRAINT <natural key> DO NOTHING``, so a
retried shard inserts nothing twice and reports how many rows it skipped. ``COPY`` straight
into the table would be a little faster but aborts on the first duplicate, which is exactly
the case retries produce. A batch is atomic: it runs inside a savepoint, so a bad row leaves
no partial rows, the error names the bad rows by their position in the input, and the
caller's transaction stays usable (its other work is untouched).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from dataflywheel import prompts as prompts_module

DbHandle = Session | Connection | psycopg.Connection[Any]
"""What the ingestion functions accept: the caller's session or connection."""

JSONObject = Mapping[str, Any]

_T = TypeVar("_T")
_R = TypeVar("_R")


# --------------------------------------------------------------------------- input rows


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptRow:
    """A prompt to upsert; its identity is :func:`prompt_content_hash` of its content."""

    prompt_set: str
    split: str
    text: str
    reference: JSONObject | None = None
    tests: str | None = None
    difficulty: int | None = None
    metadata: JSONObject = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return prompt_content_hash(
            prompt_set=self.prompt_set,
            split=self.split,
            text=self.text,
            reference=self.reference,
            tests=self.tests,
            difficulty=self.difficulty,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleRow:
    """One completion; ``(round_id, purpose, prompt_id, sample_index)`` is its natural key."""

    round_id: int
    prompt_id: int
    checkpoint_id: int
    sample_index: int
    seed: int
    text: str
    sampling_params: JSONObject
    purpose: str = "train"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoreRow:
    """A verifier's verdict on a sample known by id."""

    sample_id: int
    verifier: str
    verifier_version: str
    value: float | None
    passed: bool | None
    status: str = "scored"
    reason: str | None = None
    details: JSONObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyedScoreRow:
    """A verdict on a sample known by its natural key: what a Ray worker holds after it
    generated and scored a shard, without reading sample ids back first."""

    round_id: int
    prompt_id: int
    sample_index: int
    verifier: str
    verifier_version: str
    value: float | None
    passed: bool | None
    purpose: str = "train"
    status: str = "scored"
    reason: str | None = None
    details: JSONObject = field(default_factory=dict)


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


# --------------------------------------------------------------------------- hashing


# The hashing lives with the prompts (one definition for the whole core); re-exported here
# because ingestion callers key prompts by it.
canonical_json = prompts_module.canonical_json
text_hash = prompts_module.sha256_hex
prompt_content_hash = prompts_module.content_hash


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class _Plan:
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


_SAMPLES = _Plan(
    table="samples",
    staging="_ingest_samples",
    columns=(
        ("round_id", "bigint"),
        ("prompt_id", "bigint"),
        ("checkpoint_id", "bigint"),
        ("purpose", "text"),
        ("sample_index", "integer"),
        ("seed", "bigint"),
        ("sampling_params", "jsonb"),
        ("text", "text"),
        ("prompt_tokens", "integer"),
        ("completion_tokens", "integer"),
        ("finish_reason", "text"),
    ),
    insert_sql="""
        INSERT INTO samples (round_id, prompt_id, checkpoint_id, purpose, sample_index, seed,
                             sampling_params, text, prompt_tokens, completion_tokens,
                             finish_reason)
        SELECT round_id, prompt_id, checkpoint_id, purpose, sample_index, seed,
               sampling_params, text, prompt_tokens, completion_tokens, finish_reason
        FROM _ingest_samples
        ON CONFLICT ON CONSTRAINT uq_samples_round_id_purpose_prompt_id_sample_index DO NOTHING
    """,
    key_columns=("round_id", "purpose", "prompt_id", "sample_index"),
)

_SCORE_COLUMNS = (
    ("verifier", "text"),
    ("verifier_version", "text"),
    ("value", "double precision"),
    ("passed", "boolean"),
    ("status", "text"),
    ("reason", "text"),
    ("details", "jsonb"),
)

_SCORES = _Plan(
    table="scores",
    staging="_ingest_scores",
    columns=(("sample_id", "bigint"), *_SCORE_COLUMNS),
    insert_sql="""
        INSERT INTO scores (sample_id, verifier, verifier_version, value, passed, status,
                            reason, details)
        SELECT sample_id, verifier, verifier_version, value, passed, status, reason, details
        FROM _ingest_scores
        ON CONFLICT ON CONSTRAINT uq_scores_sample_id_verifier_verifier_version DO NOTHING
    """,
    key_columns=("sample_id", "verifier", "verifier_version"),
)

# LEFT JOIN on purpose: a key that matches no sample yields sample_id NULL, which the NOT NULL
# constraint rejects, so a score never silently vanishes and the happy path joins only once.
_KEYED_SCORES = _Plan(
    table="scores",
    staging="_ingest_keyed_scores",
    columns=(
        ("round_id", "bigint"),
        ("purpose", "text"),
        ("prompt_id", "bigint"),
        ("sample_index", "integer"),
        *_SCORE_COLUMNS,
    ),
    insert_sql="""
        INSERT INTO scores (sample_id, verifier, verifier_version, value, passed, status,
                            reason, details)
        SELECT s.id, k.verifier, k.verifier_version, k.value, k.passed, k.status, k.reason,
               k.details
        FROM _ingest_keyed_scores k
        LEFT JOIN samples s
          ON s.round_id = k.round_id AND s.purpose = k.purpose
         AND s.prompt_id = k.prompt_id AND s.sample_index = k.sample_index
        ON CONFLICT ON CONSTRAINT uq_scores_sample_id_verifier_verifier_version DO NOTHING
    """,
    key_columns=("round_id", "purpose", "prompt_id", "sample_index", "verifier"),
    null_means={
        "sample_id": (
            "no sample has this (round_id, purpose, prompt_id, sample_index)",
            """NOT EXISTS (SELECT 1 FROM samples s
                WHERE s.round_id = staged.round_id AND s.purpose = staged.purpose
                  AND s.prompt_id = staged.prompt_id AND s.sample_index = staged.sample_index)""",
        )
    },
)

_PROMPTS = _Plan(
    table="prompts",
    staging="_ingest_prompts",
    columns=(
        ("content_hash", "text"),
        ("text_hash", "text"),
        ("prompt_set", "text"),
        ("split", "text"),
        ("text", "text"),
        ("reference", "jsonb"),
        ("tests", "text"),
        ("difficulty", "integer"),
        ("metadata", "jsonb"),
    ),
    insert_sql="""
        INSERT INTO prompts (content_hash, text_hash, prompt_set, split, text, reference, tests,
                             difficulty, metadata)
        SELECT content_hash, text_hash, prompt_set, split, text, reference, tests, difficulty,
               metadata
        FROM _ingest_prompts
        ON CONFLICT ON CONSTRAINT uq_prompts_content_hash DO NOTHING
    """,
    key_columns=("prompt_set", "split", "content_hash"),
)

# Read in the same statement snapshot after the insert: under READ COMMITTED a row another
# transaction committed meanwhile is visible; under REPEATABLE READ, ON CONFLICT raises a
# serialization failure instead of skipping a row this snapshot cannot see.
_PROMPT_IDS_SQL = """
    SELECT DISTINCT p.content_hash, p.id
    FROM _ingest_prompts k JOIN prompts p ON p.content_hash = k.content_hash
"""


def _json(value: JSONObject | None) -> str | None:
    # COPY carries JSONB as its text form; NaN is not JSON, so it fails here with a position.
    return None if value is None else json.dumps(value, allow_nan=False)


def _sample_tuple(r: SampleRow) -> tuple[object, ...]:
    return (
        r.round_id,
        r.prompt_id,
        r.checkpoint_id,
        r.purpose,
        r.sample_index,
        r.seed,
        _json(r.sampling_params),
        r.text,
        r.prompt_tokens,
        r.completion_tokens,
        r.finish_reason,
    )


def _score_tuple(r: ScoreRow) -> tuple[object, ...]:
    return (
        r.sample_id,
        r.verifier,
        r.verifier_version,
        r.value,
        r.passed,
        r.status,
        r.reason,
        _json(r.details),
    )


def _keyed_score_tuple(r: KeyedScoreRow) -> tuple[object, ...]:
    return (
        r.round_id,
        r.purpose,
        r.prompt_id,
        r.sample_index,
        r.verifier,
        r.verifier_version,
        r.value,
        r.passed,
        r.status,
        r.reason,
        _json(r.details),
    )


def _prompt_tuple(r: PromptRow) -> tuple[object, ...]:
    return (
        r.content_hash,
        text_hash(r.text),
        r.prompt_set,
        r.split,
        r.text,
        _json(r.reference),
        r.tests,
        r.difficulty,
        _json(r.metadata),
    )


# --------------------------------------------------------------------------- public API


def insert_samples(db: DbHandle, rows: Iterable[SampleRow]) -> IngestCounts:
    """COPY samples in; rows whose natural key already exists are skipped."""
    counts, _ = _ingest(db, _SAMPLES, rows, _sample_tuple)
    return counts


def insert_scores(db: DbHandle, rows: Iterable[ScoreRow]) -> IngestCounts:
    """COPY scores for samples known by id; re-scoring with the same verifier version is a
    no-op."""
    counts, _ = _ingest(db, _SCORES, rows, _score_tuple)
    return counts


def insert_scores_by_key(db: DbHandle, rows: Iterable[KeyedScoreRow]) -> IngestCounts:
    """COPY scores for samples known by ``(round_id, purpose, prompt_id, sample_index)``; the
    ids are resolved in SQL. A key that matches no sample rejects the batch."""
    counts, _ = _ingest(db, _KEYED_SCORES, rows, _keyed_score_tuple)
    return counts


def upsert_prompts(db: DbHandle, prompts: Iterable[PromptRow]) -> dict[str, int]:
    """Insert the prompts not yet stored; return ``content_hash -> id`` for every prompt
    given, new or pre-existing. A stored prompt keeps its original ``metadata``."""

    def fetch_ids(cur: psycopg.Cursor[Any]) -> dict[str, int]:
        cur.execute(_PROMPT_IDS_SQL)
        return {content_hash: id_ for content_hash, id_ in cur.fetchall()}

    _, ids = _ingest(db, _PROMPTS, prompts, _prompt_tuple, fetch_ids)
    return ids or {}


# --------------------------------------------------------------------------- machinery


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


def _ingest(
    db: DbHandle,
    plan: _Plan,
    rows: Iterable[_T],
    convert: Callable[[_T], tuple[object, ...]],
    fetch: Callable[[psycopg.Cursor[Any]], _R] | None = None,
) -> tuple[IngestCounts, _R | None]:
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
    plan: _Plan,
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


def _explain(cur: psycopg.Cursor[Any], plan: _Plan, exc: errors.IntegrityError) -> IngestError:
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
