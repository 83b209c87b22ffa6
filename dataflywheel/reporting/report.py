"""A run's per-round numbers, read from the system of record.

Runs in: anywhere with a database session (the CLI, API handlers, notebooks). The query
functions take the caller's ``Session``, only read, and never commit. One query per table
for the whole run (grouped by round in SQL), so the cost does not grow with round count times
round trips.

Definitions (what each number means):

* ``prompts`` / ``samples``: distinct prompts and rows of the round's ``purpose='train'``
  samples (the ones generated for selection; eval samples are not counted).
* verifier ``pass_rate``: passed / (passed + failed) over those train samples, per verifier
  name and version. Unscorable verdicts are excluded from the rate and counted apart.
* ``kept``: the summed ``row_count`` of the round's sft/preference datasets; ``seen`` the summed
  ``stats.seen``; ``yield`` the dataset's own ``stats.yield`` when the round has one dataset,
  else kept / seen.
* ``training.rows``: rows of every dataset the round's checkpoint trained on (replayed and
  labelled data included), from ``checkpoint_datasets``.
* ``eval``: the evaluation of the round's checkpoint whose ``primary_metric`` is the run's
  primary metric (``spec.evaluation.primary``; lowest id wins on ties); ``delta`` is its value
  minus the parent checkpoint's value on the same eval set and metric (the model training
  started from: the incumbent the promotion gate compared against). ``baseline`` is the same
  for the run's base checkpoint (``round_id`` NULL), without a delta.
* ``filters`` / ``diversity``: the data filters' accounts (rows in, out, yield, removed by
  reason) and the distinct-n of the kept samples, from the datasets' ``stats``.
* ``agreement``: judge-vs-verifier agreement on the round's train samples, where a
  model-based scorer and a rule verifier both ran (:mod:`dataflywheel.reporting.agreement`).
* ``promoted``: the round checkpoint's status as a bool (null while a candidate or absent);
  ``promotion`` the gate's decision from ``manifest.promotion.decision`` (``skipped`` when
  nothing was kept to train on), else derived from the status.

The types are in :mod:`dataflywheel.reporting.summaries`, the JSON form and its schema in
:mod:`dataflywheel.reporting.document`.
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataflywheel.db.models import (
    Checkpoint,
    CheckpointDataset,
    Dataset,
    DatasetMember,
    Evaluation,
    Prompt,
    Round,
    Run,
    Sample,
    Score,
)
from dataflywheel.reporting.agreement import round_agreement
from dataflywheel.reporting.summaries import (
    STAGES,
    DatasetSummary,
    EvalSummary,
    RoundReport,
    RunReport,
    TrainingSummary,
    VerifierStats,
    is_number,
)

TRAINING_KINDS = ("sft", "preference")


class RunNotFound(LookupError):
    """The run asked about does not exist."""


# --------------------------------------------------------------------------- queries


def run_report(session: Session, run_id: int) -> RunReport:
    """Everything the report shows about ``run_id``; raises :class:`RunNotFound`."""
    run = session.get(Run, run_id)
    if run is None:
        raise RunNotFound(f"run {run_id} does not exist; `flywheel runs` lists the runs")
    spec = run.spec or {}
    primary_metric = str((spec.get("evaluation") or {}).get("primary") or "accuracy")
    has_warmup = spec.get("warmup") is not None
    rounds = list(
        session.scalars(sa.select(Round).where(Round.run_id == run_id).order_by(Round.index))
    )
    round_ids = [r.id for r in rounds]

    generated = _generation_counts(session, round_ids)
    verdicts = _verifier_stats(session, round_ids)
    agreements = round_agreement(session, round_ids)
    datasets = _round_datasets(session, run_id)
    checkpoints = list(session.scalars(sa.select(Checkpoint).where(Checkpoint.run_id == run_id)))
    trained_on = _trained_on(session, [c.id for c in checkpoints])
    by_checkpoint = _evaluations(
        session, {c.id for c in checkpoints} | {c.parent_id for c in checkpoints if c.parent_id}
    )
    parents = {c.id: c.parent_id for c in checkpoints}

    def evals_of(checkpoint_id: int) -> tuple[EvalSummary | None, tuple[EvalSummary, ...]]:
        own = by_checkpoint.get(checkpoint_id, [])
        ordered = sorted(own, key=lambda e: (e.primary_metric != primary_metric, e.id))
        summaries = [
            _eval_summary(e, by_checkpoint.get(parents.get(e.checkpoint_id) or -1, []))
            for e in ordered
        ]
        return (summaries[0] if summaries else None), tuple(summaries[1:])

    base = next((c for c in checkpoints if c.round_id is None and c.peer == 0), None)
    baseline = None
    if base is not None:
        first, _ = evals_of(base.id)
        # The baseline is the base model as measured, not a change: it has no delta.
        baseline = _replace_delta(first, None) if first else None

    # A round's model (peers only vote; their samples count in the round's totals).
    ckpt_of_round = {c.round_id: c for c in checkpoints if c.round_id is not None and c.peer == 0}
    reports = []
    for rnd in rounds:
        manifest = rnd.manifest or {}
        ckpt = ckpt_of_round.get(rnd.id)
        main_eval, other_evals = evals_of(ckpt.id) if ckpt else (None, ())
        prompts, samples = generated.get(rnd.id, (0, 0))
        reports.append(
            RoundReport(
                index=rnd.index,
                warmup=has_warmup and rnd.index == 0,
                status=rnd.status,
                started_at=rnd.started_at,
                finished_at=rnd.finished_at,
                stage_seconds=_stage_seconds(manifest.get("stage_seconds")),
                curriculum=manifest.get("curriculum")
                if isinstance(manifest.get("curriculum"), dict)
                else None,
                prompts=prompts,
                samples=samples,
                verifiers=tuple(verdicts.get(rnd.id, ())),
                datasets=tuple(datasets.get(rnd.id, ())),
                training=_training(ckpt, trained_on.get(ckpt.id, [])) if ckpt else None,
                eval=main_eval,
                other_evals=other_evals,
                gate=manifest.get("promotion")
                if isinstance(manifest.get("promotion"), dict)
                else None,
                agreement=tuple(agreements.get(rnd.id, ())),
            )
        )
    rounds_planned = spec.get("rounds")
    return RunReport(
        id=run.id,
        name=run.name,
        status=run.status,
        primary_metric=primary_metric,
        rounds_planned=rounds_planned if isinstance(rounds_planned, int) else None,
        warmup=has_warmup,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        baseline=baseline,
        rounds=tuple(reports),
    )


def _generation_counts(session: Session, round_ids: list[int]) -> dict[int, tuple[int, int]]:
    """round id -> (distinct prompts, samples) over train samples."""
    stmt = (
        sa.select(Sample.round_id, sa.func.count(sa.distinct(Sample.prompt_id)), sa.func.count())
        .where(Sample.round_id.in_(round_ids), Sample.purpose == "train")
        .group_by(Sample.round_id)
    )
    return {rid: (int(p), int(n)) for rid, p, n in session.execute(stmt)}


def _verifier_stats(session: Session, round_ids: list[int]) -> dict[int, list[VerifierStats]]:
    passed = sa.func.count().filter(Score.passed.is_(True))
    failed = sa.func.count().filter(Score.passed.is_(False))
    unscorable = sa.func.count().filter(Score.status == "unscorable")
    stmt = (
        sa.select(
            Sample.round_id, Score.verifier, Score.verifier_version, passed, failed, unscorable
        )
        .join(Sample, Sample.id == Score.sample_id)
        .where(Sample.round_id.in_(round_ids), Sample.purpose == "train")
        .group_by(Sample.round_id, Score.verifier, Score.verifier_version)
        .order_by(Sample.round_id, Score.verifier, Score.verifier_version)
    )
    found: dict[int, list[VerifierStats]] = defaultdict(list)
    for rid, name, version, n_pass, n_fail, n_unscorable in session.execute(stmt):
        found[rid].append(VerifierStats(name, version, int(n_pass), int(n_fail), int(n_unscorable)))
    return found


def _round_datasets(session: Session, run_id: int) -> dict[int, list[DatasetSummary]]:
    stmt = (
        sa.select(Dataset)
        .where(
            Dataset.run_id == run_id,
            Dataset.round_id.is_not(None),
            Dataset.kind.in_(TRAINING_KINDS),
        )
        .order_by(Dataset.id)
    )
    found: dict[int, list[DatasetSummary]] = defaultdict(list)
    datasets = list(session.scalars(stmt))
    audit = _label_accuracy(session, [d.id for d in datasets if d.recipe != "labelled"])
    for d in datasets:
        assert d.round_id is not None
        found[d.round_id].append(
            DatasetSummary(d.id, d.name, d.kind, d.row_count, d.stats or {}, audit.get(d.id))
        )
    return found


def _label_accuracy(session: Session, dataset_ids: list[int]) -> dict[int, float]:
    right = (DatasetMember.label == Prompt.reference["answer"].astext).cast(sa.Integer)
    stmt = (
        sa.select(DatasetMember.dataset_id, sa.func.avg(right))
        .join(Prompt, Prompt.id == DatasetMember.prompt_id)
        .where(
            DatasetMember.dataset_id.in_(dataset_ids),
            DatasetMember.label.is_not(None),
            Prompt.reference["answer"].is_not(None),
        )
        .group_by(DatasetMember.dataset_id)
    )
    return {dataset_id: float(share) for dataset_id, share in session.execute(stmt)}


def _trained_on(session: Session, checkpoint_ids: list[int]) -> dict[int, list[tuple[int, int]]]:
    """checkpoint id -> [(dataset id, row count)] of everything it trained on."""
    stmt = (
        sa.select(CheckpointDataset.checkpoint_id, Dataset.id, Dataset.row_count)
        .join(Dataset, Dataset.id == CheckpointDataset.dataset_id)
        .where(CheckpointDataset.checkpoint_id.in_(checkpoint_ids))
        .order_by(CheckpointDataset.checkpoint_id, Dataset.id)
    )
    found: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for ckpt_id, dataset_id, rows in session.execute(stmt):
        found[ckpt_id].append((dataset_id, rows))
    return found


def _evaluations(session: Session, checkpoint_ids: set[int]) -> dict[int, list[Evaluation]]:
    stmt = (
        sa.select(Evaluation)
        .where(Evaluation.checkpoint_id.in_(checkpoint_ids))
        .order_by(Evaluation.id)
    )
    found: dict[int, list[Evaluation]] = defaultdict(list)
    for e in session.scalars(stmt):
        found[e.checkpoint_id].append(e)
    return found


def _eval_summary(e: Evaluation, parent_evals: list[Evaluation]) -> EvalSummary:
    parent = next(
        (
            p
            for p in parent_evals
            if p.eval_set == e.eval_set and p.primary_metric == e.primary_metric
        ),
        None,
    )
    return EvalSummary(
        evaluation_id=e.id,
        checkpoint_id=e.checkpoint_id,
        eval_set=e.eval_set,
        metric=e.primary_metric,
        primary=e.primary_value,
        delta=e.primary_value - parent.primary_value if parent is not None else None,
        metrics=dict(e.metrics or {}),
    )


def _replace_delta(e: EvalSummary, delta: float | None) -> EvalSummary:
    return EvalSummary(
        e.evaluation_id, e.checkpoint_id, e.eval_set, e.metric, e.primary, delta, e.metrics
    )


def _training(ckpt: Checkpoint, trained_on: list[tuple[int, int]]) -> TrainingSummary:
    metrics = ckpt.training_metrics or {}
    loss, steps, seconds = (metrics.get(k) for k in ("final_loss", "steps", "seconds"))
    return TrainingSummary(
        checkpoint_id=ckpt.id,
        parent_id=ckpt.parent_id,
        status=ckpt.status,
        final_loss=float(loss) if is_number(loss) else None,
        steps=int(steps) if is_number(steps) else None,
        seconds=float(seconds) if is_number(seconds) else None,
        rows=sum(rows for _, rows in trained_on),
        dataset_ids=tuple(dataset_id for dataset_id, _ in trained_on),
    )


def _stage_seconds(raw: object) -> dict[str, float]:
    """The manifest's stage durations in pipeline order (unknown stages after, by name)."""
    if not isinstance(raw, dict):
        return {}
    known = {k: float(v) for k, v in raw.items() if is_number(v)}
    order = [s for s in STAGES if s in known] + sorted(k for k in known if k not in STAGES)
    return {k: known[k] for k in order}
