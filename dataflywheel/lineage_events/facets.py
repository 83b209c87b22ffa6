"""The flywheel's own OpenLineage facets: what the standard facets have no field for.

Runs in: anywhere (pure). Each is an ``attrs`` subclass of the client's facet base, so the
client serialises it with ``_producer`` and ``_schemaURL`` like any standard facet. Their keys
start with ``dataflywheel`` (OpenLineage asks custom facets for a producer prefix); their
fields are described in docs/openlineage.md; their schema URL is the producer's package URL
with the facet's name as the fragment, as OpenLineage's own are ``...json#/$defs/<Facet>``.
"""

from __future__ import annotations

from typing import Any

import attr
from openlineage.client.facet_v2 import DatasetFacet, InputDatasetFacet, RunFacet

from dataflywheel import __version__

# A package URL (purl): the producer is this distribution at this version.
PRODUCER = f"pkg:pypi/dataflywheel@{__version__}"


def _schema(name: str) -> str:
    return f"{PRODUCER}#/$defs/{name}"


@attr.define(kw_only=True)
class FlywheelRunFacet(RunFacet):
    """Key ``dataflywheel``: which flywheel run, round and stage this OpenLineage run is."""

    runId: int
    runName: str
    specHash: str
    roundIndex: int | None = None
    stage: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return _schema("FlywheelRunFacet")


@attr.define(kw_only=True)
class PromotionRunFacet(RunFacet):
    """Key ``dataflywheel_promotion``: the gate's decision and the numbers it compared."""

    decision: str
    candidate: float | None = None
    incumbent: float | None = None
    maxDrop: float | None = None
    reason: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return _schema("PromotionRunFacet")


@attr.define(kw_only=True)
class CheckpointDatasetFacet(DatasetFacet):
    """Key ``dataflywheel_checkpoint``: model weights in the object store."""

    checkpointId: int
    digest: str | None = None
    objectKey: str | None = None
    status: str
    peer: int = 0
    roundIndex: int | None = None
    sourceUri: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return _schema("CheckpointDatasetFacet")


@attr.define(kw_only=True)
class TrainingDatasetFacet(DatasetFacet):
    """Key ``dataflywheel_dataset``: a selected dataset file and how it was selected."""

    digest: str
    objectKey: str
    kind: str
    recipe: str | None = None
    rowCount: int
    stats: dict[str, Any] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return _schema("TrainingDatasetFacet")


@attr.define(kw_only=True)
class SamplesDatasetFacet(DatasetFacet):
    """Key ``dataflywheel_samples``: how many samples of which purpose, over how many prompts."""

    purpose: str
    samples: int
    prompts: int

    @staticmethod
    def _get_schema() -> str:
        return _schema("SamplesDatasetFacet")


@attr.define(kw_only=True)
class VerifiersDatasetFacet(DatasetFacet):
    """Key ``dataflywheel_verifiers``: per verifier name and version, its verdicts."""

    purpose: str
    verifiers: list[dict[str, Any]]

    @staticmethod
    def _get_schema() -> str:
        return _schema("VerifiersDatasetFacet")


@attr.define(kw_only=True)
class EvaluationDatasetFacet(DatasetFacet):
    """Key ``dataflywheel_evaluation``: a checkpoint's metrics on an eval set."""

    evalSet: str
    primaryMetric: str
    primaryValue: float
    metrics: dict[str, Any] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return _schema("EvaluationDatasetFacet")


@attr.define(kw_only=True)
class PromptSetDatasetFacet(DatasetFacet):
    """Key ``dataflywheel_prompts``: which prompt set and split."""

    promptSet: str
    split: str

    @staticmethod
    def _get_schema() -> str:
        return _schema("PromptSetDatasetFacet")


@attr.define(kw_only=True)
class TrainingMixInputFacet(InputDatasetFacet):
    """Input facet ``dataflywheel_trainingMix``: the dataset's share of the training mix."""

    share: float

    @staticmethod
    def _get_schema() -> str:
        return _schema("TrainingMixInputFacet")
