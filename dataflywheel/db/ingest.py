"""Bulk ingestion of prompts, samples and scores through PostgreSQL ``COPY``.

Runs in: Prefect tasks and Ray workers that persist results (anywhere with a database
connection). Every function takes the caller's SQLAlchemy ``Session``/``Connection`` (or a
non-autocommit psycopg connection) and never commits: the caller owns the transaction.

This module owns the rows (their types, their columns, the natural key each is inserted
under); :mod:`dataflywheel.db.staged_copy` moves a batch. Each batch is streamed with
``COPY`` into a temporary staging table, then moved into the real table with ``INSERT ...
SELECT ... ON CONFLICT ON CONSTRAINT <natural key> DO NOTHING``, so a retried shard inserts
nothing twice and reports how many rows it skipped. ``COPY`` straight into the table would be
a little faster but aborts on the first duplicate, which is exactly the case retries produce.
A batch is atomic: it runs inside a savepoint, so a bad row leaves no partial rows, the error
(:class:`IngestError`) names the bad rows by their position in the input, and the caller's
transaction stays usable (its other work is untouched).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from dataflywheel import prompts as prompts_module
from dataflywheel.db.staged_copy import (
    CopyPlan,
    DbHandle,
    IngestCounts,
    IngestError,
    ingest_batch,
)

__all__ = [
    "DbHandle",
    "IngestCounts",
    "IngestError",
    "KeyedScoreRow",
    "PromptRow",
    "SampleRow",
    "ScoreRow",
    "canonical_json",
    "insert_samples",
    "insert_scores",
    "insert_scores_by_key",
    "prompt_content_hash",
    "text_hash",
    "upsert_prompts",
]

JSONObject = Mapping[str, Any]


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


# --------------------------------------------------------------------------- hashing


# The hashing lives with the prompts (one definition for the whole core); re-exported here
# because ingestion callers key prompts by it.
canonical_json = prompts_module.canonical_json
text_hash = prompts_module.sha256_hex
prompt_content_hash = prompts_module.content_hash


# --------------------------------------------------------------------------- plans


_SAMPLES = CopyPlan(
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

_SCORES = CopyPlan(
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
_KEYED_SCORES = CopyPlan(
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

_PROMPTS = CopyPlan(
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
    counts, _ = ingest_batch(db, _SAMPLES, rows, _sample_tuple)
    return counts


def insert_scores(db: DbHandle, rows: Iterable[ScoreRow]) -> IngestCounts:
    """COPY scores for samples known by id; re-scoring with the same verifier version is a
    no-op."""
    counts, _ = ingest_batch(db, _SCORES, rows, _score_tuple)
    return counts


def insert_scores_by_key(db: DbHandle, rows: Iterable[KeyedScoreRow]) -> IngestCounts:
    """COPY scores for samples known by ``(round_id, purpose, prompt_id, sample_index)``; the
    ids are resolved in SQL. A key that matches no sample rejects the batch."""
    counts, _ = ingest_batch(db, _KEYED_SCORES, rows, _keyed_score_tuple)
    return counts


def upsert_prompts(db: DbHandle, prompts: Iterable[PromptRow]) -> dict[str, int]:
    """Insert the prompts not yet stored; return ``content_hash -> id`` for every prompt
    given, new or pre-existing. A stored prompt keeps its original ``metadata``."""

    def fetch_ids(cur: psycopg.Cursor[Any]) -> dict[str, int]:
        cur.execute(_PROMPT_IDS_SQL)
        return {content_hash: id_ for content_hash, id_ in cur.fetchall()}

    _, ids = ingest_batch(db, _PROMPTS, prompts, _prompt_tuple, fetch_ids)
    return ids or {}
