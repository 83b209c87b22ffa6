"""The reads and writes behind the HTTP API: API keys, the sample browser's search, runs by
idempotency key, and the objects a download may hand out.

Runs in: anywhere with a session (API handlers, ``flywheel api-key``). Functions take a
``Session`` and never commit: the request (or the CLI command) is the unit of work.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataflywheel.db.models import (
    ApiKey,
    Checkpoint,
    Dataset,
    Prompt,
    Round,
    Run,
    Sample,
    Score,
)

TOKEN_PREFIX = "fw_"
# 32 random bytes: a guess is hopeless, so one unsalted sha256 is enough to store it (a
# password hash's slowness protects low-entropy secrets, which these are not).
TOKEN_BYTES = 32
DISPLAY_CHARS = 10


# --- API keys -----------------------------------------------------------------------------


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh bearer token, e.g. ``fw_3q2...``; shown once, stored only as its hash."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def create_api_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """Insert a key named ``name``; returns the row and the token (never stored)."""
    if not name.strip():
        raise ValueError("an API key needs a non-empty name (who or what will use it)")
    token = new_token()
    key = ApiKey(name=name.strip(), prefix=token[:DISPLAY_CHARS], token_hash=hash_token(token))
    session.add(key)
    session.flush()
    return key, token


def authenticate(session: Session, token: str) -> ApiKey | None:
    """The live key ``token`` belongs to (its ``last_used_at`` bumped), or None."""
    key = session.execute(
        sa.select(ApiKey).where(ApiKey.token_hash == hash_token(token), ApiKey.revoked_at.is_(None))
    ).scalar_one_or_none()
    if key is not None:
        key.last_used_at = sa.func.now()
    return key


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(sa.select(ApiKey).order_by(ApiKey.id)))


def revoke_api_key(session: Session, ident: str) -> ApiKey:
    """Revoke the key whose id or display prefix is ``ident``; idempotent."""
    clause = ApiKey.id == int(ident) if ident.isdigit() else ApiKey.prefix == ident
    found = list(session.scalars(sa.select(ApiKey).where(clause)))
    if not found:
        raise LookupError(f"no API key with id or prefix {ident!r}; `flywheel api-key list`")
    if len(found) > 1:
        raise LookupError(f"several keys start with {ident!r}; revoke by id instead")
    key = found[0]
    if key.revoked_at is None:
        key.revoked_at = sa.func.now()
    session.flush()
    return key


# --- runs ---------------------------------------------------------------------------------


def run_by_idempotency_key(session: Session, key: str) -> Run | None:
    return session.execute(sa.select(Run).where(Run.idempotency_key == key)).scalar_one_or_none()


def list_runs_page(
    session: Session, *, limit: int, offset: int, status: str | None = None
) -> list[Run]:
    stmt = sa.select(Run).order_by(Run.id.desc()).limit(limit).offset(offset)
    if status is not None:
        stmt = stmt.where(Run.status == status)
    return list(session.scalars(stmt))


# --- samples ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleFilter:
    """What the sample browser asks for; every field narrows the result (None: no filter).

    ``passed`` with a ``verifier`` means that verifier's verdict; without one it means *some*
    verifier passed (True) or failed (False) the sample. ``min_score``/``max_score`` bound a
    score's value the same way. ``text`` is a case-insensitive substring of the completion or
    of its prompt.
    """

    run_id: int | None = None
    round_index: int | None = None
    round_id: int | None = None
    prompt_id: int | None = None
    checkpoint_id: int | None = None
    purpose: str | None = None
    verifier: str | None = None
    passed: bool | None = None
    min_score: float | None = None
    max_score: float | None = None
    text: str | None = None


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_samples(
    session: Session, flt: SampleFilter, *, after_id: int | None, limit: int
) -> list[dict[str, Any]]:
    """Samples matching ``flt``, ordered by id, starting after ``after_id`` (keyset
    pagination: stable while rows are added), each with its prompt, round and scores."""
    stmt = (
        sa.select(
            Sample,
            Round.run_id,
            Round.index,
            Prompt.text.label("prompt_text"),
            Prompt.reference,
            Prompt.prompt_set,
            Prompt.difficulty,
        )
        .join(Round, Round.id == Sample.round_id)
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .order_by(Sample.id)
        .limit(limit)
    )
    if after_id is not None:
        stmt = stmt.where(Sample.id > after_id)
    equal = {
        Round.run_id: flt.run_id,
        Round.index: flt.round_index,
        Sample.round_id: flt.round_id,
        Sample.prompt_id: flt.prompt_id,
        Sample.checkpoint_id: flt.checkpoint_id,
        Sample.purpose: flt.purpose,
    }
    for column, value in equal.items():
        if value is not None:
            stmt = stmt.where(column == value)
    score_clauses = []
    if flt.verifier is not None:
        score_clauses.append(Score.verifier == flt.verifier)
    if flt.passed is not None:
        score_clauses.append(Score.passed.is_(flt.passed))
    if flt.min_score is not None:
        score_clauses.append(Score.value >= flt.min_score)
    if flt.max_score is not None:
        score_clauses.append(Score.value <= flt.max_score)
    if score_clauses:
        stmt = stmt.where(
            sa.exists().where(Score.sample_id == Sample.id, *score_clauses).correlate(Sample)
        )
    if flt.text:
        pattern = _like(flt.text)
        stmt = stmt.where(sa.or_(Sample.text.ilike(pattern), Prompt.text.ilike(pattern)))
    rows = session.execute(stmt).all()
    scores = _scores_of(session, [row.Sample.id for row in rows])
    return [
        {
            "id": row.Sample.id,
            "run_id": row.run_id,
            "round_id": row.Sample.round_id,
            "round_index": row.index,
            "prompt_id": row.Sample.prompt_id,
            "prompt_set": row.prompt_set,
            "prompt_text": row.prompt_text,
            "reference": row.reference,
            "difficulty": row.difficulty,
            "checkpoint_id": row.Sample.checkpoint_id,
            "purpose": row.Sample.purpose,
            "sample_index": row.Sample.sample_index,
            "seed": row.Sample.seed,
            "sampling_params": row.Sample.sampling_params,
            "text": row.Sample.text,
            "completion_tokens": row.Sample.completion_tokens,
            "finish_reason": row.Sample.finish_reason,
            "created_at": row.Sample.created_at,
            "scores": scores.get(row.Sample.id, []),
        }
        for row in rows
    ]


def _scores_of(session: Session, sample_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    if not sample_ids:
        return found
    stmt = sa.select(Score).where(Score.sample_id.in_(sample_ids)).order_by(Score.id)
    for score in session.scalars(stmt):
        found.setdefault(score.sample_id, []).append(
            {
                "verifier": score.verifier,
                "version": score.verifier_version,
                "value": score.value,
                "passed": score.passed,
                "status": score.status,
                "reason": score.reason,
            }
        )
    return found


# --- downloads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    """A row that points at bytes in the object store."""

    kind: str  # "dataset" | "checkpoint"
    id: int
    object_key: str | None
    digest: str | None
    created_at: datetime


def dataset_object(session: Session, dataset_id: int) -> StoredObject:
    found = session.get(Dataset, dataset_id)
    if found is None:
        raise LookupError(f"dataset {dataset_id} does not exist")
    return StoredObject("dataset", found.id, found.object_key, found.digest, found.created_at)


def checkpoint_object(session: Session, checkpoint_id: int) -> StoredObject:
    found = session.get(Checkpoint, checkpoint_id)
    if found is None:
        raise LookupError(f"checkpoint {checkpoint_id} does not exist")
    return StoredObject("checkpoint", found.id, found.object_key, found.digest, found.created_at)
