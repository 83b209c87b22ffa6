"""What each stage of a round read and wrote, read back from the database for OpenLineage.

Runs in: the flow process, when a stage ends (``tasks/lineage.py``). Functions take a
``Session`` and never commit; they return the plain facts of
``dataflywheel.lineage_events.facts``. Each stage's inputs and outputs are found by the
round and the sample purpose, the same keys the stages themselves use, so a retried or
resumed stage reports what the database holds, not what one attempt happened to write.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataflywheel.db import checkpoints, queries
from dataflywheel.db.models import (
    Checkpoint,
    CheckpointDataset,
    Dataset,
    DatasetMember,
    Prompt,
    Round,
    Sample,
    Score,
)
from dataflywheel.lineage_events.facts import (
    CheckpointFact,
    DatasetFact,
    EvaluationFact,
    Fact,
    PromptSetFact,
    RunIdentity,
    SamplesFact,
    ScoresFact,
    StageFacts,
    VerifierTally,
)
from dataflywheel.rounds.plan import EVAL_SET, TRAIN_DATASET


def run_identity(session: Session, run_id: int) -> RunIdentity:
    run = queries.get_run(session, run_id)
    return RunIdentity(
        run_id=run.id, name=run.name, spec_hash=run.spec_hash, created_at=run.created_at
    )


def round_position(session: Session, round_id: int) -> tuple[int, int]:
    """(run id, round index) of a round."""
    rnd = queries.get_round(session, round_id)
    return rnd.run_id, rnd.index


def stage_facts(session: Session, round_id: int, stage: str) -> StageFacts:
    """The inputs and outputs of ``stage`` of the round, as the database holds them now."""
    run_id, index = round_position(session, round_id)
    if stage == "generate":
        return StageFacts(
            inputs=(
                *_prompt_sets(session, round_id, "train"),
                *_generators(session, round_id, "train"),
            ),
            outputs=_present(_samples(session, run_id, index, round_id, "train")),
        )
    if stage == "verify":
        return StageFacts(
            inputs=_present(_samples(session, run_id, index, round_id, "train")),
            outputs=_present(_scores(session, run_id, index, round_id, "train")),
        )
    if stage == "select":
        return _select(session, run_id, index, round_id)
    if stage == "train":
        return _train(session, run_id, index, round_id)
    if stage in ("evaluate", "evaluate_baseline"):
        purpose = "eval" if stage == "evaluate" else "baseline"
        generators = _generators(session, round_id, purpose)
        evaluations = [_evaluation(session, c) for c in generators]
        return StageFacts(
            inputs=(*_prompt_sets(session, round_id, purpose), *generators),
            outputs=(
                *_present(_samples(session, run_id, index, round_id, purpose)),
                *_present(_scores(session, run_id, index, round_id, purpose)),
                *[e for e in evaluations if e is not None],
            ),
        )
    if stage == "promote":
        return _promote(session, round_id)
    raise ValueError(f"unknown stage {stage!r}")


def _present(fact: Fact | None) -> tuple[Fact, ...]:
    return () if fact is None else (fact,)


def _select(session: Session, run_id: int, index: int, round_id: int) -> StageFacts:
    dataset = checkpoints.round_dataset(session, round_id, TRAIN_DATASET)
    if dataset is not None and dataset.recipe == "labelled":
        # The warm-up's dataset is the labelled prompts' references: its members name
        # prompts, not samples.
        inputs: tuple[Fact, ...] = tuple(_member_prompt_sets(session, dataset.id))
    else:
        inputs = (
            *_present(_samples(session, run_id, index, round_id, "train")),
            *_present(_scores(session, run_id, index, round_id, "train")),
        )
    outputs = () if dataset is None else (_dataset(dataset, index),)
    return StageFacts(inputs=inputs, outputs=outputs)


def _train(session: Session, run_id: int, index: int, round_id: int) -> StageFacts:
    trained = checkpoints.round_checkpoints(session, round_id)
    if not trained:  # nothing was selected: the round trains nothing
        dataset = checkpoints.round_dataset(session, round_id, TRAIN_DATASET)
        return StageFacts(inputs=() if dataset is None else (_dataset(dataset, index),))
    parents = _checkpoints(session, sorted({c.parent_id for c in trained if c.parent_id}))
    return StageFacts(
        inputs=(*_training_data(session, [c.id for c in trained]), *parents),
        outputs=tuple(_checkpoints(session, [c.id for c in trained])),
    )


def _promote(session: Session, round_id: int) -> StageFacts:
    decision = dict((queries.get_round(session, round_id).manifest or {}).get("promotion") or {})
    candidate = checkpoints.round_candidate(session, round_id)
    if candidate is None or not decision:
        return StageFacts(promotion=decision or None)
    ids = [candidate.id]
    if decision.get("incumbent_checkpoint_id"):
        ids.append(int(decision["incumbent_checkpoint_id"]))
    compared = _checkpoints(session, ids)
    evaluations = [_evaluation(session, c) for c in compared]
    return StageFacts(
        inputs=(compared[0], *[e for e in evaluations if e is not None]), promotion=decision
    )


def _samples(
    session: Session, run_id: int, index: int, round_id: int, purpose: str
) -> SamplesFact | None:
    samples, prompts = session.execute(
        sa.select(sa.func.count(), sa.func.count(sa.distinct(Sample.prompt_id))).where(
            Sample.round_id == round_id, Sample.purpose == purpose
        )
    ).one()
    if not samples:
        return None
    return SamplesFact(run_id, index, purpose, samples=samples, prompts=prompts)


def _scores(
    session: Session, run_id: int, index: int, round_id: int, purpose: str
) -> ScoresFact | None:
    rows = session.execute(
        sa.select(
            Score.verifier,
            Score.verifier_version,
            sa.func.count(),
            sa.func.count().filter(Score.passed.is_(True)),
            sa.func.count().filter(Score.status == "unscorable"),
        )
        .join(Sample, Sample.id == Score.sample_id)
        .where(Sample.round_id == round_id, Sample.purpose == purpose)
        .group_by(Score.verifier, Score.verifier_version)
        .order_by(Score.verifier, Score.verifier_version)
    ).all()
    if not rows:
        return None
    tallies = tuple(VerifierTally(*row) for row in rows)
    return ScoresFact(run_id, index, purpose, verifiers=tallies)


def _prompt_sets(session: Session, round_id: int, purpose: str) -> list[PromptSetFact]:
    rows = session.execute(
        sa.select(Prompt.prompt_set, Prompt.split, sa.func.count(sa.distinct(Prompt.id)))
        .join(Sample, Sample.prompt_id == Prompt.id)
        .where(Sample.round_id == round_id, Sample.purpose == purpose)
        .group_by(Prompt.prompt_set, Prompt.split)
        .order_by(Prompt.prompt_set, Prompt.split)
    ).all()
    return [PromptSetFact(*row) for row in rows]


def _member_prompt_sets(session: Session, dataset_id: int) -> list[PromptSetFact]:
    rows = session.execute(
        sa.select(Prompt.prompt_set, Prompt.split, sa.func.count(sa.distinct(Prompt.id)))
        .join(DatasetMember, DatasetMember.prompt_id == Prompt.id)
        .where(DatasetMember.dataset_id == dataset_id)
        .group_by(Prompt.prompt_set, Prompt.split)
        .order_by(Prompt.prompt_set, Prompt.split)
    ).all()
    return [PromptSetFact(*row) for row in rows]


def _generators(session: Session, round_id: int, purpose: str) -> list[CheckpointFact]:
    """The checkpoints that generated the round's samples of ``purpose`` (one per peer)."""
    ids = session.execute(
        sa.select(sa.distinct(Sample.checkpoint_id)).where(
            Sample.round_id == round_id, Sample.purpose == purpose
        )
    ).scalars()
    return _checkpoints(session, sorted(ids))


def _checkpoints(session: Session, ids: Sequence[int]) -> list[CheckpointFact]:
    """The checkpoints ``ids`` in that order, each with the index of the round that trained it."""
    if not ids:
        return []
    rows = session.execute(
        sa.select(Checkpoint, Round.index)
        .outerjoin(Round, Round.id == Checkpoint.round_id)
        .where(Checkpoint.id.in_(ids))
    ).all()
    found = {
        c.id: CheckpointFact(
            checkpoint_id=c.id,
            run_id=c.run_id,
            round_index=index,
            peer=c.peer,
            status=c.status,
            digest=c.digest,
            object_key=c.object_key,
            source_uri=c.source_uri,
        )
        for c, index in rows
    }
    return [found[i] for i in ids if i in found]


def _training_data(session: Session, checkpoint_ids: Sequence[int]) -> list[DatasetFact]:
    """The datasets the checkpoints trained on (the round's own, replayed earlier rounds',
    the warm-up's), each once, with its share of the mix."""
    rows = session.execute(
        sa.select(Dataset, Round.index, CheckpointDataset.share)
        .join(CheckpointDataset, CheckpointDataset.dataset_id == Dataset.id)
        .join(Round, Round.id == Dataset.round_id)
        .where(CheckpointDataset.checkpoint_id.in_(checkpoint_ids))
        .order_by(Round.index, Dataset.name)
    ).all()
    found: dict[int, DatasetFact] = {}
    for dataset, index, share in rows:
        found.setdefault(dataset.id, _dataset(dataset, index, share))
    return list(found.values())


def _dataset(dataset: Dataset, index: int, share: float | None = None) -> DatasetFact:
    return DatasetFact(
        run_id=dataset.run_id,
        round_index=index,
        name=dataset.name,
        kind=dataset.kind,
        recipe=dataset.recipe,
        digest=dataset.digest,
        object_key=dataset.object_key,
        row_count=dataset.row_count,
        stats=dict(dataset.stats or {}),
        share=share,
    )


def _evaluation(session: Session, checkpoint: CheckpointFact) -> EvaluationFact | None:
    """The evaluation of ``checkpoint`` on the held-out set, if it was evaluated."""
    evaluation = checkpoints.evaluation_of(session, checkpoint.checkpoint_id, EVAL_SET)
    if evaluation is None:
        return None
    return EvaluationFact(
        run_id=checkpoint.run_id,
        round_index=checkpoint.round_index,
        eval_set=evaluation.eval_set,
        primary_metric=evaluation.primary_metric,
        primary_value=evaluation.primary_value,
        metrics=dict(evaluation.metrics or {}),
    )
