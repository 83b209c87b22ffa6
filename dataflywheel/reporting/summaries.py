"""What a run report holds: typed summaries of a run, its rounds, their verifiers, datasets,
training and evaluations, and the figures derived from them (kept, yield, promotion).

Runs in: anywhere (pure). :func:`dataflywheel.reporting.report.run_report` fills these from
the system of record, and its module docstring defines what each number means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dataflywheel.reporting.agreement import Agreement

STAGES = ("generate", "verify", "select", "train", "evaluate", "promote")
"""A round's stages in pipeline order: the order stage durations are shown in."""


@dataclass(frozen=True, slots=True)
class VerifierStats:
    """One verifier's verdicts on a round's train samples."""

    name: str
    version: str
    passed: int
    failed: int
    unscorable: int

    @property
    def pass_rate(self) -> float | None:
        scored = self.passed + self.failed
        return self.passed / scored if scored else None


@dataclass(frozen=True, slots=True)
class EvalSummary:
    """A checkpoint's evaluation on one eval set; ``delta`` is against its parent's."""

    evaluation_id: int
    checkpoint_id: int
    eval_set: str
    metric: str
    primary: float
    delta: float | None
    metrics: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DatasetSummary:
    """``label_accuracy``: the share of pseudo-labels (members with a ``label``) equal to
    their prompt's reference answer — an audit for the reader; selection never reads it."""

    id: int
    name: str
    kind: str
    rows: int
    stats: dict[str, Any]
    label_accuracy: float | None = None


@dataclass(frozen=True, slots=True)
class TrainingSummary:
    """The checkpoint a round trained, what it trained on and how training went."""

    checkpoint_id: int
    parent_id: int | None
    status: str
    final_loss: float | None
    steps: int | None
    seconds: float | None
    rows: int
    dataset_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RoundReport:
    index: int
    warmup: bool
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    stage_seconds: dict[str, float]
    curriculum: dict[str, Any] | None
    prompts: int
    samples: int
    verifiers: tuple[VerifierStats, ...]
    datasets: tuple[DatasetSummary, ...]
    training: TrainingSummary | None
    eval: EvalSummary | None
    other_evals: tuple[EvalSummary, ...] = ()
    gate: dict[str, Any] | None = None
    agreement: tuple[Agreement, ...] = ()

    @property
    def kept(self) -> int:
        return sum(d.rows for d in self.datasets)

    @property
    def label_accuracy(self) -> float | None:
        """Pseudo-label accuracy against the references (an audit), over all datasets."""
        audited = [(d.label_accuracy, d.rows) for d in self.datasets]
        audited = [(a, n) for a, n in audited if a is not None]
        rows = sum(n for _, n in audited)
        return sum(a * n for a, n in audited) / rows if rows else None

    @property
    def filters(self) -> list[dict[str, Any]]:
        """Data-filter accounts (``recipes/filters.py``) of the round's datasets, in order:
        ``{"filter", "in", "out", "yield", "removed": {reason: n}}``."""
        return [step for d in self.datasets for step in d.stats.get("filters") or []]

    @property
    def diversity(self) -> dict[str, Any] | None:
        """Distinct-n of the kept samples (the round's first dataset that measured it)."""
        return next((d.stats["diversity"] for d in self.datasets if d.stats.get("diversity")), None)

    @property
    def seen(self) -> int | None:
        seen = [d.stats["seen"] for d in self.datasets if is_number(d.stats.get("seen"))]
        return int(sum(seen)) if seen else None

    @property
    def yield_(self) -> float | None:
        if len(self.datasets) == 1 and is_number(self.datasets[0].stats.get("yield")):
            return float(self.datasets[0].stats["yield"])
        seen = self.seen
        return self.kept / seen if seen else None

    @property
    def seconds(self) -> float | None:
        """Wall time of the round; the stage durations' sum while it has no finish time."""
        if self.started_at is not None and self.finished_at is not None:
            return (self.finished_at - self.started_at).total_seconds()
        return sum(self.stage_seconds.values()) if self.stage_seconds else None

    @property
    def level_accuracy(self) -> dict[str, float] | None:
        """The round checkpoint's held-out accuracy per difficulty level (its evaluation's
        ``per_difficulty_accuracy``, keys as strings), in level order."""
        levels = self.eval.metrics.get("per_difficulty_accuracy") if self.eval else None
        if not isinstance(levels, dict):
            return None
        ordered = sorted(levels.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)
        return {k: float(v) for k, v in ordered if is_number(v)}

    @property
    def promoted(self) -> bool | None:
        if self.training is None or self.training.status not in ("promoted", "rejected"):
            return None
        return self.training.status == "promoted"

    @property
    def promotion(self) -> str | None:
        """The gate's decision: ``promoted``, ``rejected`` or ``skipped`` (nothing trained)."""
        if self.gate and isinstance(self.gate.get("decision"), str):
            return str(self.gate["decision"])
        return None if self.promoted is None else "promoted" if self.promoted else "rejected"


@dataclass(frozen=True, slots=True)
class RunReport:
    id: int
    name: str
    status: str
    primary_metric: str
    rounds_planned: int | None
    warmup: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    baseline: EvalSummary | None
    rounds: tuple[RoundReport, ...] = field(default_factory=tuple)

    def summary(self) -> dict[str, Any]:
        evaluated = [r for r in self.rounds if r.eval is not None]
        best = max(evaluated, key=lambda r: r.eval.primary) if evaluated else None  # type: ignore[union-attr]
        promoted = [r for r in self.rounds if r.promoted and r.eval is not None]
        current = promoted[-1] if promoted else None
        current_value = current.eval.primary if current and current.eval else None
        gain = (
            current_value - self.baseline.primary
            if current_value is not None and self.baseline is not None
            else None
        )
        return {
            "best_round": best.index if best else None,
            "best_primary": best.eval.primary if best and best.eval else None,
            "promoted_checkpoint_id": current.training.checkpoint_id
            if current and current.training
            else None,
            "promoted_primary": current_value,
            "gain_over_baseline": gain,
        }


def is_number(value: object) -> bool:
    """A finite int or float: a NaN loss (training logged no step) is no number to show."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
