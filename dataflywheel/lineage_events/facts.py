"""What a stage read and wrote, as plain values: the input of the OpenLineage event builders.

Runs in: anywhere (pure). ``dataflywheel.db.stage_facts`` fills these from the database when
a stage ends; ``dataflywheel.lineage_events.events`` turns them into datasets and facets.
Keeping them plain means the events can be built and checked without a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class PromptSetFact:
    """The prompts of one prompt set and split that a stage drew."""

    prompt_set: str
    split: str
    prompts: int


@dataclass(frozen=True)
class CheckpointFact:
    """A checkpoint (``checkpoint_id``: its row); ``round_index`` None is the run's base model."""

    checkpoint_id: int
    run_id: int
    round_index: int | None
    peer: int
    status: str
    digest: str | None
    object_key: str | None
    source_uri: str | None = None


@dataclass(frozen=True)
class SamplesFact:
    """A round's samples of one purpose."""

    run_id: int
    round_index: int
    purpose: str
    samples: int
    prompts: int


@dataclass(frozen=True)
class VerifierTally:
    """One verifier version's verdicts on a set of samples."""

    name: str
    version: str
    scores: int
    passed: int
    unscorable: int


@dataclass(frozen=True)
class ScoresFact:
    """The scores of a round's samples of one purpose, per verifier version."""

    run_id: int
    round_index: int
    purpose: str
    verifiers: tuple[VerifierTally, ...]

    @property
    def scores(self) -> int:
        return sum(v.scores for v in self.verifiers)


@dataclass(frozen=True)
class DatasetFact:
    """A selected dataset (a row of ``datasets``); ``share`` is its part of a training mix
    when it is a training input."""

    run_id: int
    round_index: int
    name: str
    kind: str
    recipe: str | None
    digest: str
    object_key: str
    row_count: int
    stats: Mapping[str, Any] = field(default_factory=dict)
    share: float | None = None


@dataclass(frozen=True)
class EvaluationFact:
    """A checkpoint's evaluation on an eval set."""

    run_id: int
    round_index: int | None
    eval_set: str
    primary_metric: str
    primary_value: float
    metrics: Mapping[str, Any]


Fact = PromptSetFact | CheckpointFact | SamplesFact | ScoresFact | DatasetFact | EvaluationFact


@dataclass(frozen=True)
class StageFacts:
    """A stage's inputs and outputs; ``promotion`` is the gate's decision (promote only)."""

    inputs: tuple[Fact, ...] = ()
    outputs: tuple[Fact, ...] = ()
    promotion: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RunIdentity:
    """What names a flywheel run in OpenLineage, and what its run facet reports."""

    run_id: int
    name: str
    spec_hash: str
    created_at: datetime
