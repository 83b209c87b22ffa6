"""Lineage queries: what went into a checkpoint, and what a prompt or a sample went into.

Runs in: anywhere with a database session (API handlers, the CLI, notebooks). Every function
takes the caller's SQLAlchemy ``Session`` or ``Connection``, only reads, and never commits.

The SQL lives in the module constants below, written with ``:name`` parameters that both
SQLAlchemy and psql understand, and ``docs/lineage.md`` prints each constant verbatim as a
psql recipe (a test keeps them identical). Ancestry walks ``checkpoints.parent_id`` upwards
with a recursive CTE and aggregates the training data in SQL, so its cost grows with the
lineage, not with the size of the database. ``CYCLE`` clauses guard the recursive walks
against a corrupted ``parent_id`` loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session


class NotFound(LookupError):
    """The checkpoint, prompt or sample asked about does not exist."""


# --------------------------------------------------------------------------- SQL: ancestry

_CHAIN = """\
WITH RECURSIVE chain (id, parent_id, depth) AS (
    SELECT id, parent_id, 0
    FROM checkpoints
    WHERE id = :checkpoint_id
  UNION ALL
    SELECT c.id, c.parent_id, chain.depth + 1
    FROM checkpoints c
    JOIN chain ON c.id = chain.parent_id
) CYCLE id SET is_cycle USING path"""

# The sample ids of each training dataset of the lineage, per role: ``chosen`` (the kept sample
# of an sft row, the chosen side of a pair) and ``rejected``. A replay dataset shared by several
# ancestors appears once. The ids travel as arrays because ``= ANY (array)`` lets one B-tree
# scan per dataset walk the sorted ids, skipping redundant descents (PostgreSQL 17+), where a
# join probes the index once per row: 3-4x faster at 60k training rows.
_MEMBER_IDS = """,
training_datasets AS (
    SELECT DISTINCT cd.dataset_id
    FROM chain
    JOIN checkpoint_datasets cd ON cd.checkpoint_id = chain.id
    WHERE NOT chain.is_cycle
),
member_ids (dataset_id, role, sample_ids) AS (
    SELECT t.dataset_id, 'chosen', ARRAY(
        SELECT dm.sample_id FROM dataset_members dm
        WHERE dm.dataset_id = t.dataset_id AND dm.sample_id IS NOT NULL)
    FROM training_datasets t
  UNION ALL
    SELECT t.dataset_id, 'rejected', ARRAY(
        SELECT dm.rejected_sample_id FROM dataset_members dm
        WHERE dm.dataset_id = t.dataset_id AND dm.rejected_sample_id IS NOT NULL)
    FROM training_datasets t
)"""

ANCESTRY_CHECKPOINTS_SQL = (
    _CHAIN
    + """
SELECT c.id, chain.depth, c.parent_id, c.run_id, c.round_id, r.index AS round_index,
       c.status, c.source_uri, c.digest, c.created_at
FROM chain
JOIN checkpoints c ON c.id = chain.id
LEFT JOIN rounds r ON r.id = c.round_id
WHERE NOT chain.is_cycle
ORDER BY chain.depth"""
)

ANCESTRY_DATASETS_SQL = (
    _CHAIN
    + """
SELECT cd.checkpoint_id, d.id AS dataset_id, d.name, d.kind, d.run_id, d.round_id,
       r.index AS round_index, cd.share, d.row_count
FROM chain
JOIN checkpoint_datasets cd ON cd.checkpoint_id = chain.id
JOIN datasets d ON d.id = cd.dataset_id
LEFT JOIN rounds r ON r.id = d.round_id
WHERE NOT chain.is_cycle
ORDER BY chain.depth, d.id"""
)

ANCESTRY_SAMPLE_SOURCES_SQL = (
    _CHAIN
    + _MEMBER_IDS
    + """
SELECT m.dataset_id, m.role, r.run_id, s.round_id, r.index AS round_index,
       s.checkpoint_id AS generated_by, s.samples
FROM member_ids m
CROSS JOIN LATERAL (
    SELECT round_id, checkpoint_id, count(*) AS samples
    FROM samples
    WHERE id = ANY (m.sample_ids)
    GROUP BY round_id, checkpoint_id
) s
JOIN rounds r ON r.id = s.round_id
ORDER BY m.dataset_id, m.role, r.run_id, r.index, s.checkpoint_id"""
)

ANCESTRY_VERDICTS_SQL = (
    _CHAIN
    + _MEMBER_IDS
    + """
SELECT m.dataset_id, m.role, v.verifier, v.verifier_version,
       v.scored, v.passed, v.failed, v.unscorable
FROM member_ids m
CROSS JOIN LATERAL (
    SELECT verifier, verifier_version,
           count(*) AS scored,
           count(*) FILTER (WHERE passed) AS passed,
           count(*) FILTER (WHERE NOT passed) AS failed,
           count(*) FILTER (WHERE status = 'unscorable') AS unscorable
    FROM scores
    WHERE sample_id = ANY (m.sample_ids)
    GROUP BY verifier, verifier_version
) v
ORDER BY m.dataset_id, m.role, v.verifier, v.verifier_version"""
)

# Keyset paging on sample id: a page is one pass over the lineage's member ids.
TRAINING_SAMPLE_IDS_SQL = (
    _CHAIN
    + _MEMBER_IDS
    + """
SELECT DISTINCT ids.sample_id
FROM member_ids m
CROSS JOIN LATERAL unnest(m.sample_ids) AS ids (sample_id)
WHERE ids.sample_id > :after_sample_id
ORDER BY ids.sample_id
LIMIT :page_size"""
)

# --------------------------------------------------------------------------- SQL: descendants

_PROMPT_SEED = """\
seed_samples AS (
    SELECT id FROM samples WHERE prompt_id = :prompt_id
)"""

_SAMPLE_SEED = """\
seed_samples AS (
    SELECT id FROM samples WHERE id = :sample_id
)"""

# Dataset rows that hold a seed sample (kept, chosen or rejected); for a prompt also the rows
# that name the prompt itself (eval sets, pseudo-labelled rows).
_PROMPT_MEMBERS = """,
seed_members AS (
    SELECT dm.id, dm.dataset_id
    FROM dataset_members dm
    WHERE dm.prompt_id = :prompt_id
  UNION
    SELECT dm.id, dm.dataset_id
    FROM seed_samples s
    JOIN dataset_members dm ON s.id IN (dm.sample_id, dm.rejected_sample_id)
)"""

_SAMPLE_MEMBERS = """,
seed_members AS (
    SELECT dm.id, dm.dataset_id
    FROM seed_samples s
    JOIN dataset_members dm ON s.id IN (dm.sample_id, dm.rejected_sample_id)
)"""

_SAMPLES_TAIL = """
SELECT s.id AS sample_id, s.round_id, s.purpose, s.prompt_id, s.sample_index,
       s.checkpoint_id AS generated_by,
       sc.id AS score_id, sc.verifier, sc.verifier_version, sc.passed, sc.value, sc.status
FROM seed_samples ss
JOIN samples s ON s.id = ss.id
LEFT JOIN scores sc ON sc.sample_id = s.id
ORDER BY s.id, sc.id"""

_DATASETS_TAIL = """
SELECT d.id AS dataset_id, d.name, d.kind, d.run_id, d.round_id, count(*) AS members
FROM seed_members m
JOIN datasets d ON d.id = m.dataset_id
GROUP BY d.id
ORDER BY d.id"""

# depth 0: trained on one of the datasets; depth n: n generations below such a checkpoint.
_CHECKPOINTS_TAIL = """,
descendants (id, depth) AS (
    SELECT cd.checkpoint_id, 0
    FROM checkpoint_datasets cd
    WHERE cd.dataset_id IN (SELECT dataset_id FROM seed_members)
  UNION ALL
    SELECT c.id, d.depth + 1
    FROM descendants d
    JOIN checkpoints c ON c.parent_id = d.id
) CYCLE id SET is_cycle USING path
SELECT c.id AS checkpoint_id, min(d.depth) AS depth, c.parent_id, c.run_id, c.round_id,
       c.status, e.id AS evaluation_id, e.eval_set, e.primary_metric, e.primary_value
FROM descendants d
JOIN checkpoints c ON c.id = d.id
LEFT JOIN evaluations e ON e.checkpoint_id = c.id
WHERE NOT d.is_cycle
GROUP BY c.id, e.id
ORDER BY c.id, e.id"""

PROMPT_SAMPLES_SQL = "WITH " + _PROMPT_SEED + _SAMPLES_TAIL
PROMPT_DATASETS_SQL = "WITH " + _PROMPT_SEED + _PROMPT_MEMBERS + _DATASETS_TAIL
PROMPT_CHECKPOINTS_SQL = "WITH RECURSIVE " + _PROMPT_SEED + _PROMPT_MEMBERS + _CHECKPOINTS_TAIL
SAMPLE_SAMPLES_SQL = "WITH " + _SAMPLE_SEED + _SAMPLES_TAIL
SAMPLE_DATASETS_SQL = "WITH " + _SAMPLE_SEED + _SAMPLE_MEMBERS + _DATASETS_TAIL
SAMPLE_CHECKPOINTS_SQL = "WITH RECURSIVE " + _SAMPLE_SEED + _SAMPLE_MEMBERS + _CHECKPOINTS_TAIL

RECIPES: dict[str, str] = {
    "ANCESTRY_CHECKPOINTS_SQL": ANCESTRY_CHECKPOINTS_SQL,
    "ANCESTRY_DATASETS_SQL": ANCESTRY_DATASETS_SQL,
    "ANCESTRY_SAMPLE_SOURCES_SQL": ANCESTRY_SAMPLE_SOURCES_SQL,
    "ANCESTRY_VERDICTS_SQL": ANCESTRY_VERDICTS_SQL,
    "TRAINING_SAMPLE_IDS_SQL": TRAINING_SAMPLE_IDS_SQL,
    "PROMPT_SAMPLES_SQL": PROMPT_SAMPLES_SQL,
    "PROMPT_DATASETS_SQL": PROMPT_DATASETS_SQL,
    "PROMPT_CHECKPOINTS_SQL": PROMPT_CHECKPOINTS_SQL,
    "SAMPLE_SAMPLES_SQL": SAMPLE_SAMPLES_SQL,
    "SAMPLE_DATASETS_SQL": SAMPLE_DATASETS_SQL,
    "SAMPLE_CHECKPOINTS_SQL": SAMPLE_CHECKPOINTS_SQL,
}
"""Every statement the functions run, by name: docs/lineage.md prints each one verbatim."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class AncestorCheckpoint:
    """A checkpoint of the chain; depth 0 is the one asked about, 1 its parent, ..."""

    id: int
    depth: int
    parent_id: int | None
    run_id: int
    round_id: int | None
    round_index: int | None
    status: str
    source_uri: str | None
    digest: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TrainingDataset:
    """A dataset that a checkpoint of the chain was trained on."""

    checkpoint_id: int
    dataset_id: int
    name: str
    kind: str
    run_id: int
    round_id: int | None
    round_index: int | None
    share: float | None
    row_count: int


@dataclass(frozen=True, slots=True)
class SampleSource:
    """How many distinct samples of a dataset (in one role) a round and a checkpoint generated.

    ``role`` is ``chosen`` for the kept sample of an sft row or the chosen side of a pair,
    ``rejected`` for the rejected side of a pair.
    """

    dataset_id: int
    role: str
    run_id: int
    round_id: int
    round_index: int
    generated_by: int
    samples: int


@dataclass(frozen=True, slots=True)
class VerifierTally:
    """What one verifier (name and version) said about a dataset's distinct samples (in one
    role); ``scored`` counts the samples it has a verdict on."""

    dataset_id: int
    role: str
    verifier: str
    verifier_version: str
    scored: int
    passed: int
    failed: int
    unscorable: int


@dataclass(frozen=True, slots=True)
class CheckpointAncestry:
    """Everything a checkpoint came from, aggregated: the chain of parents, the datasets
    each was trained on, and where those datasets' samples came from and who passed them."""

    checkpoint_id: int
    chain: tuple[AncestorCheckpoint, ...]
    datasets: tuple[TrainingDataset, ...]
    sources: tuple[SampleSource, ...]
    verdicts: tuple[VerifierTally, ...]


@dataclass(frozen=True, slots=True)
class DescendantSample:
    id: int
    round_id: int
    purpose: str
    prompt_id: int
    sample_index: int
    generated_by: int


@dataclass(frozen=True, slots=True)
class DescendantScore:
    id: int
    sample_id: int
    verifier: str
    verifier_version: str
    passed: bool | None
    value: float | None
    status: str


@dataclass(frozen=True, slots=True)
class DescendantDataset:
    """A dataset holding some of the samples (or the prompt); ``members`` counts those rows."""

    id: int
    name: str
    kind: str
    run_id: int
    round_id: int | None
    members: int


@dataclass(frozen=True, slots=True)
class DescendantCheckpoint:
    """A checkpoint influenced by the data: depth 0 was trained on one of the datasets,
    depth n descends n generations (``parent_id``) from such a checkpoint."""

    id: int
    depth: int
    parent_id: int | None
    run_id: int
    round_id: int | None
    status: str


@dataclass(frozen=True, slots=True)
class DescendantEvaluation:
    id: int
    checkpoint_id: int
    eval_set: str
    primary_metric: str
    primary_value: float


@dataclass(frozen=True, slots=True)
class Descendants:
    """Everything downstream of a prompt or a sample, each list ordered by id."""

    samples: tuple[DescendantSample, ...]
    scores: tuple[DescendantScore, ...]
    datasets: tuple[DescendantDataset, ...]
    checkpoints: tuple[DescendantCheckpoint, ...]
    evaluations: tuple[DescendantEvaluation, ...]


# --------------------------------------------------------------------------- functions

Db = Session | Connection


def _rows(db: Db, sql: str, **params: Any) -> list[sa.Row[Any]]:
    if isinstance(db, Session):
        db.flush()  # as an ORM query would: rows the caller added are part of the lineage
    return list(db.execute(sa.text(sql), params))


def checkpoint_ancestry(db: Db, checkpoint_id: int) -> CheckpointAncestry:
    """The checkpoint's chain of parents and an aggregate of all their training data."""
    chain = tuple(
        AncestorCheckpoint(*row)
        for row in _rows(db, ANCESTRY_CHECKPOINTS_SQL, checkpoint_id=checkpoint_id)
    )
    if not chain:
        raise NotFound(f"checkpoint {checkpoint_id} does not exist")
    return CheckpointAncestry(
        checkpoint_id=checkpoint_id,
        chain=chain,
        datasets=tuple(
            TrainingDataset(*row)
            for row in _rows(db, ANCESTRY_DATASETS_SQL, checkpoint_id=checkpoint_id)
        ),
        sources=tuple(
            SampleSource(*row)
            for row in _rows(db, ANCESTRY_SAMPLE_SOURCES_SQL, checkpoint_id=checkpoint_id)
        ),
        verdicts=tuple(
            VerifierTally(*row)
            for row in _rows(db, ANCESTRY_VERDICTS_SQL, checkpoint_id=checkpoint_id)
        ),
    )


def training_sample_ids(
    db: Db, checkpoint_id: int, *, after_sample_id: int = 0, page_size: int = 10_000
) -> list[int]:
    """One page of the distinct sample ids (chosen and rejected) in the training data of the
    checkpoint and its ancestors, ascending, after ``after_sample_id``."""
    rows = _rows(
        db,
        TRAINING_SAMPLE_IDS_SQL,
        checkpoint_id=checkpoint_id,
        after_sample_id=after_sample_id,
        page_size=page_size,
    )
    return [int(row[0]) for row in rows]


def iter_training_sample_ids(
    db: Db, checkpoint_id: int, *, page_size: int = 10_000
) -> Iterator[int]:
    """Every training sample id of the lineage, streamed page by page."""
    after = 0
    while True:
        page = training_sample_ids(db, checkpoint_id, after_sample_id=after, page_size=page_size)
        yield from page
        if len(page) < page_size:
            return
        after = page[-1]


def prompt_descendants(db: Db, prompt_id: int) -> Descendants:
    """Every sample generated from the prompt, their scores, the datasets holding them (or
    the prompt), the checkpoints trained on those and their descendants, and evaluations."""
    if not _rows(db, "SELECT 1 FROM prompts WHERE id = :id", id=prompt_id):
        raise NotFound(f"prompt {prompt_id} does not exist")
    return _descendants(
        db,
        (PROMPT_SAMPLES_SQL, PROMPT_DATASETS_SQL, PROMPT_CHECKPOINTS_SQL),
        {"prompt_id": prompt_id},
    )


def sample_descendants(db: Db, sample_id: int) -> Descendants:
    """The sample, its scores, the datasets holding it, the checkpoints trained on those and
    their descendants, and their evaluations."""
    found = _descendants(
        db,
        (SAMPLE_SAMPLES_SQL, SAMPLE_DATASETS_SQL, SAMPLE_CHECKPOINTS_SQL),
        {"sample_id": sample_id},
    )
    if not found.samples:
        raise NotFound(f"sample {sample_id} does not exist")
    return found


def _descendants(db: Db, sql: tuple[str, str, str], params: dict[str, int]) -> Descendants:
    samples_sql, datasets_sql, checkpoints_sql = sql
    samples: dict[int, DescendantSample] = {}
    scores: list[DescendantScore] = []
    for row in _rows(db, samples_sql, **params):
        samples.setdefault(row.sample_id, DescendantSample(*row[:6]))
        if row.score_id is not None:
            scores.append(DescendantScore(row.score_id, row.sample_id, *row[7:]))
    checkpoints: dict[int, DescendantCheckpoint] = {}
    evaluations: list[DescendantEvaluation] = []
    for row in _rows(db, checkpoints_sql, **params):
        checkpoints.setdefault(row.checkpoint_id, DescendantCheckpoint(*row[:6]))
        if row.evaluation_id is not None:
            evaluations.append(DescendantEvaluation(row.evaluation_id, row.checkpoint_id, *row[7:]))
    return Descendants(
        samples=tuple(samples.values()),
        scores=tuple(sorted(scores, key=lambda s: s.id)),
        datasets=tuple(DescendantDataset(*row) for row in _rows(db, datasets_sql, **params)),
        checkpoints=tuple(checkpoints.values()),
        evaluations=tuple(sorted(evaluations, key=lambda e: e.id)),
    )
