"""Lineage queries: what went into a checkpoint, and what a prompt or a sample went into.

Runs in: anywhere with a database session (API handlers, the CLI, notebooks). Every function
takes the caller's SQLAlchemy ``Session`` or ``Connection``, only reads, and never commits.

The statements are in :mod:`dataflywheel.db.lineage_sql` (``docs/lineage.md`` prints each
verbatim as a psql recipe); this module runs them and returns typed results. Ancestry
aggregates the training data in SQL, so its cost grows with the lineage, not with the size of
the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from dataflywheel.db.lineage_sql import (
    ANCESTRY_CHECKPOINTS_SQL,
    ANCESTRY_DATASETS_SQL,
    ANCESTRY_SAMPLE_SOURCES_SQL,
    ANCESTRY_VERDICTS_SQL,
    PROMPT_CHECKPOINTS_SQL,
    PROMPT_DATASETS_SQL,
    PROMPT_SAMPLES_SQL,
    SAMPLE_CHECKPOINTS_SQL,
    SAMPLE_DATASETS_SQL,
    SAMPLE_SAMPLES_SQL,
    TRAINING_SAMPLE_IDS_SQL,
)


class NotFound(LookupError):
    """The checkpoint, prompt or sample asked about does not exist."""


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
