"""Prompts, samples and scores as the round's stages read them: the samples a stage scores,
selects from or evaluates, their scores, and the prompts they answer.

Runs in: anywhere with a session (Prefect tasks, tests). Functions take a ``Session`` and
never commit. Rows come in (prompt, sample index) order where the caller's result depends on
order (shards, candidates, per-prompt results); lists of ids go ``ID_CHUNK`` at a time, since
a round can have more prompts or samples than PostgreSQL takes bound parameters (65,535).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataflywheel.db import ingest
from dataflywheel.db.models import Checkpoint, Prompt, Sample, Score
from dataflywheel.prompts import Prompt as PromptRecord
from dataflywheel.rounds.plan import PromptRef

ID_CHUNK = 10_000
"""Ids per ``IN (...)`` list: well under PostgreSQL's limit of 65,535 bound parameters."""


def register_prompts(session: Session, prompts: list[PromptRecord]) -> list[PromptRef]:
    """Upsert prompts (content-addressed) and pair each with its row id."""
    ids = ingest.upsert_prompts(
        session,
        [
            ingest.PromptRow(
                prompt_set=p.prompt_set,
                split=p.split,
                text=p.text,
                reference=p.reference,
                tests=p.tests,
                difficulty=p.difficulty,
                metadata=p.metadata,
            )
            for p in prompts
        ],
    )
    return [PromptRef(ids[p.content_hash], p) for p in prompts]


def prompts_by_id(session: Session, prompt_ids: Sequence[int]) -> list[Prompt]:
    """The prompts with these ids, read ``ID_CHUNK`` ids per statement."""
    ids = sorted(set(prompt_ids))
    found: list[Prompt] = []
    for start in range(0, len(ids), ID_CHUNK):
        chunk = ids[start : start + ID_CHUNK]
        found += session.execute(sa.select(Prompt).where(Prompt.id.in_(chunk))).scalars()
    return found


def prompt_payloads(session: Session, prompt_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The prompts with these ids as the verifiers read them (``workers.verify``), by id."""
    return {
        p.id: {
            "prompt_set": p.prompt_set,
            "split": p.split,
            "text": p.text,
            "reference": p.reference,
            "tests": p.tests,
            "difficulty": p.difficulty,
            "metadata": p.meta,
        }
        for p in prompts_by_id(session, prompt_ids)
    }


def stage_samples(
    session: Session, round_id: int, purpose: str
) -> list[sa.Row[tuple[int, int, int, str]]]:
    """The round's samples of ``purpose`` as rows of (id, prompt_id, sample_index, text), in
    (prompt, sample index) order."""
    return list(
        session.execute(
            sa.select(Sample.id, Sample.prompt_id, Sample.sample_index, Sample.text)
            .where(Sample.round_id == round_id, Sample.purpose == purpose)
            .order_by(Sample.prompt_id, Sample.sample_index)
        ).all()
    )


def generating_checkpoints(session: Session, sample_ids: Sequence[int]) -> dict[int, str]:
    """``store:<object key>`` of the checkpoint that generated each sample (the samples of
    checkpoints without weights are left out), by sample id."""
    found: dict[int, str] = {}
    for start in range(0, len(sample_ids), ID_CHUNK):
        chunk = sample_ids[start : start + ID_CHUNK]
        found.update(
            session.execute(
                sa.select(Sample.id, "store:" + Checkpoint.object_key)
                .join(Checkpoint, Checkpoint.id == Sample.checkpoint_id)
                .where(Sample.id.in_(chunk), Checkpoint.object_key.is_not(None))
            ).all()
        )
    return found


def selection_samples(
    session: Session, round_id: int
) -> list[sa.Row[tuple[int, int, int, str, int]]]:
    """The round's training samples as rows of (id, prompt_id, sample_index, text, peer: of
    the model that generated it), in (prompt, sample index) order."""
    return list(
        session.execute(
            sa.select(
                Sample.id, Sample.prompt_id, Sample.sample_index, Sample.text, Checkpoint.peer
            )
            .join(Checkpoint, Checkpoint.id == Sample.checkpoint_id)
            .where(Sample.round_id == round_id, Sample.purpose == "train")
            .order_by(Sample.prompt_id, Sample.sample_index)
        ).all()
    )


def _one_score_per_verifier(versions: dict[str, str]) -> tuple[Any, ...]:
    """ORDER BY for ``DISTINCT ON (sample_id, verifier)``: a sample scored by several
    versions of a verifier (a rescore after a code change) counts once, with the score of
    the version the run's verifiers have now, else the newest score. Without this the
    stage read whichever row the database returned last."""
    current = sa.case(
        *((Score.verifier == name, Score.verifier_version == v) for name, v in versions.items()),
        else_=sa.false(),
    )
    return (Score.sample_id, Score.verifier, current.desc(), Score.id.desc())


def selection_scores(session: Session, round_id: int, versions: dict[str, str]) -> list[Score]:
    """One score per verifier of each of the round's training samples (``versions``: the
    run's verifier name → current version; see :func:`_one_score_per_verifier`)."""
    return list(
        session.execute(
            sa.select(Score)
            .join(Sample, Sample.id == Score.sample_id)
            .where(Sample.round_id == round_id, Sample.purpose == "train")
            .distinct(Score.sample_id, Score.verifier)
            .order_by(*_one_score_per_verifier(versions))
        ).scalars()
    )


def evaluation_samples(
    session: Session,
    round_id: int,
    purpose: str,
    checkpoint_id: int,
    verifier: str,
    version: str,
) -> list[sa.Row[tuple[int, int, bool | None, str, int | None]]]:
    """The checkpoint's samples of ``purpose`` in the round that ``verifier`` scored, as rows
    of (prompt_id, sample id, passed, status, the prompt's difficulty), in (prompt, sample
    index) order; one row per sample (``version`` preferred: :func:`_one_score_per_verifier`)."""
    current = _one_score_per_verifier({verifier: version})[2]
    one = (
        sa.select(
            Sample.prompt_id,
            Sample.sample_index,
            Sample.id,
            Score.passed,
            Score.status,
            Prompt.difficulty,
        )
        .join(Score, (Score.sample_id == Sample.id) & (Score.verifier == verifier))
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .where(
            Sample.round_id == round_id,
            Sample.purpose == purpose,
            Sample.checkpoint_id == checkpoint_id,
        )
        .distinct(Sample.id)
        .order_by(Sample.id, current, Score.id.desc())
        .subquery()
    )
    return list(
        session.execute(
            sa.select(
                one.c.prompt_id, one.c.id, one.c.passed, one.c.status, one.c.difficulty
            ).order_by(one.c.prompt_id, one.c.sample_index)
        ).all()
    )
