"""OpenLineage run events of a flywheel run, its rounds and their stages, built from facts.

Runs in: anywhere (pure). Three levels of job, each run pointing at the one above with a
parent facet (and at the flywheel run as root): ``run-7`` (a whole run), ``run-7.round-2``
(one round), ``run-7.round-2.train`` (one stage of it). A stage's COMPLETE event carries its
inputs and outputs (``facts.StageFacts``) with the standard facets where one fits (dataset
version = digest, output statistics = row counts, schema, documentation, job type, error
message) and the flywheel's own (``facets``) for the rest. Names: ``names``.
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from typing import Any

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    dataset_version_dataset,
    documentation_job,
    error_message_run,
    input_statistics_input_dataset,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
    schema_dataset,
)

from dataflywheel import __version__
from dataflywheel.lineage_events import facets, names
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
)

__all__ = ["RunState", "round_event", "run_event", "stage_event"]

INTEGRATION = "DATAFLYWHEEL"
STACK_TRACE_CHARS = 8000  # the tail of a traceback is where the error is; receivers cap sizes

_SAMPLE_FIELDS = (
    ("prompt_id", "bigint", "the prompt (prompts.id)"),
    ("sample_index", "integer", "which of the prompt's samples"),
    ("seed", "bigint", "the request's seed"),
    ("checkpoint_id", "bigint", "the checkpoint that generated it"),
    ("text", "text", "the completion"),
    ("finish_reason", "text", "why generation stopped"),
)
_SCORE_FIELDS = (
    ("sample_id", "bigint", "the sample scored"),
    ("verifier", "text", "the verifier's name"),
    ("verifier_version", "text", "hash of the verifier's code and configuration"),
    ("passed", "boolean", "the verdict (null: unscorable)"),
    ("value", "double", "the score"),
    ("status", "text", "scored | unscorable"),
    ("reason", "text", "why, e.g. no_answer"),
)
_DATASET_FIELDS = {
    "sft": (("prompt", "string", "the prompt"), ("completion", "string", "the kept answer")),
    "preference": (
        ("prompt", "string", "the prompt"),
        ("chosen", "string", "the preferred completion"),
        ("rejected", "string", "the rejected completion"),
    ),
}


@lru_cache(maxsize=1)
def _client_version() -> str:
    return metadata.version("openlineage-python")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _schema(fields: tuple[tuple[str, str, str], ...]) -> schema_dataset.SchemaDatasetFacet:
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(name=n, type=t, description=d)
            for n, t, d in fields
        ]
    )


def _job(namespace: str, name: str, kind: str, description: str) -> Job:
    return Job(
        namespace=namespace,
        name=name,
        facets={
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration=INTEGRATION, jobType=kind
            ),
            "documentation": documentation_job.DocumentationJobFacet(description=description),
        },
    )


def _parent(
    namespace: str, run_uuid: str, job_name: str, root_uuid: str, root_job: str
) -> parent_run.ParentRunFacet:
    return parent_run.ParentRunFacet(
        run=parent_run.Run(runId=run_uuid),
        job=parent_run.Job(namespace=namespace, name=job_name),
        root=parent_run.Root(
            run=parent_run.RootRun(runId=root_uuid),
            job=parent_run.RootJob(namespace=namespace, name=root_job),
        ),
    )


def _run_facets(
    run: RunIdentity, index: int | None, stage: str | None, error: BaseException | None
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "dataflywheel": facets.FlywheelRunFacet(
            runId=run.run_id,
            runName=run.name,
            specHash=run.spec_hash,
            roundIndex=index,
            stage=stage,
        ),
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=__version__, name="dataflywheel", openlineageAdapterVersion=_client_version()
        ),
    }
    if error is not None:
        trace = "".join(traceback.format_exception(error))
        found["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=f"{type(error).__name__}: {error}",
            programmingLanguage="python",
            stackTrace=trace[-STACK_TRACE_CHARS:],
        )
    return found


def _state(state: RunState, error: BaseException | None) -> RunState:
    if error is not None and state is not RunState.FAIL:
        raise ValueError("an error goes with a FAIL event only")
    return state


def run_event(
    state: RunState,
    namespace: str,
    run: RunIdentity,
    *,
    error: BaseException | None = None,
    event_time: str | None = None,
) -> RunEvent:
    """START / COMPLETE / FAIL of a whole flywheel run (job ``run-<id>``)."""
    uuid = names.run_uuid(namespace, run.run_id, run.created_at)
    return _stamped(
        eventType=_state(state, error),
        eventTime=event_time or _now(),
        run=Run(runId=uuid, facets=_run_facets(run, None, None, error)),
        job=_job(
            namespace, names.run_job(run.run_id), "RUN", f"Flywheel run {run.run_id}: {run.name}."
        ),
    )


def round_event(
    state: RunState,
    namespace: str,
    run: RunIdentity,
    index: int,
    *,
    error: BaseException | None = None,
    event_time: str | None = None,
) -> RunEvent:
    """START / COMPLETE / FAIL of round ``index`` (job ``run-<id>.round-<index>``), a child of
    the run."""
    root = names.run_uuid(namespace, run.run_id, run.created_at)
    root_job = names.run_job(run.run_id)
    run_facets = _run_facets(run, index, None, error)
    run_facets["parent"] = _parent(namespace, root, root_job, root, root_job)
    return _stamped(
        eventType=_state(state, error),
        eventTime=event_time or _now(),
        run=Run(runId=names.round_uuid(root, index), facets=run_facets),
        job=_job(
            namespace,
            names.round_job(run.run_id, index),
            "ROUND",
            f"Round {index} of flywheel run {run.run_id}: generate, verify, select, train, "
            "evaluate, promote.",
        ),
    )


def stage_event(
    state: RunState,
    namespace: str,
    run: RunIdentity,
    index: int,
    stage: str,
    stage_uuid: str,
    *,
    facts: StageFacts | None = None,
    error: BaseException | None = None,
    event_time: str | None = None,
) -> RunEvent:
    """START / COMPLETE / FAIL of one execution (``stage_uuid``) of a stage of round
    ``index`` (job ``run-<id>.round-<index>.<stage>``), a child of the round; ``facts`` are
    its inputs and outputs."""
    root = names.run_uuid(namespace, run.run_id, run.created_at)
    run_facets = _run_facets(run, index, stage, error)
    run_facets["parent"] = _parent(
        namespace,
        names.round_uuid(root, index),
        names.round_job(run.run_id, index),
        root,
        names.run_job(run.run_id),
    )
    facts = facts or StageFacts()
    if facts.promotion is not None:
        p = facts.promotion
        run_facets["dataflywheel_promotion"] = facets.PromotionRunFacet(
            decision=p["decision"],
            candidate=p.get("candidate"),
            incumbent=p.get("incumbent"),
            maxDrop=p.get("max_drop"),
            reason=p.get("reason"),
        )
    return _stamped(
        eventType=_state(state, error),
        eventTime=event_time or _now(),
        run=Run(runId=stage_uuid, facets=run_facets),
        job=_job(
            namespace, names.stage_job(run.run_id, index, stage), "STAGE", names.STAGES[stage]
        ),
        inputs=[input_dataset(f, namespace) for f in facts.inputs],
        outputs=[output_dataset(f, namespace) for f in facts.outputs],
    )


def _stamped(**fields: Any) -> RunEvent:
    """The event, with every facet's ``_producer`` saying this package made it (the client
    would name itself)."""
    event = RunEvent(**fields, producer=facets.PRODUCER)
    holders = [event.run.facets, event.job.facets]
    for dataset in [*event.inputs, *event.outputs]:
        holders.append(dataset.facets)
    holders += [d.inputFacets for d in event.inputs] + [d.outputFacets for d in event.outputs]
    for holder in holders:
        for facet in (holder or {}).values():
            facet._producer = facets.PRODUCER
    return event


def input_dataset(fact: Fact, namespace: str) -> InputDataset:
    name, dataset_facets, rows = _describe(fact)
    input_facets: dict[str, Any] = {}
    if rows is not None:
        input_facets["inputStatistics"] = (
            input_statistics_input_dataset.InputStatisticsInputDatasetFacet(rowCount=rows)
        )
    if isinstance(fact, DatasetFact) and fact.share is not None:
        input_facets["dataflywheel_trainingMix"] = facets.TrainingMixInputFacet(share=fact.share)
    return InputDataset(
        namespace=namespace, name=name, facets=dataset_facets, inputFacets=input_facets
    )


def output_dataset(fact: Fact, namespace: str) -> OutputDataset:
    name, dataset_facets, rows = _describe(fact)
    output_facets: dict[str, Any] = {}
    if rows is not None:
        output_facets["outputStatistics"] = (
            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(rowCount=rows)
        )
    return OutputDataset(
        namespace=namespace, name=name, facets=dataset_facets, outputFacets=output_facets
    )


def _describe(fact: Fact) -> tuple[str, dict[str, Any], int | None]:
    """(dataset name, dataset facets, rows read or written) of a fact."""
    if isinstance(fact, PromptSetFact):
        return (
            names.prompt_set_dataset(fact.prompt_set, fact.split),
            {
                "dataflywheel_prompts": facets.PromptSetDatasetFacet(
                    promptSet=fact.prompt_set, split=fact.split
                )
            },
            fact.prompts,
        )
    if isinstance(fact, CheckpointFact):
        found: dict[str, Any] = {
            "dataflywheel_checkpoint": facets.CheckpointDatasetFacet(
                checkpointId=fact.checkpoint_id,
                digest=fact.digest,
                objectKey=fact.object_key,
                status=fact.status,
                peer=fact.peer,
                roundIndex=fact.round_index,
                sourceUri=fact.source_uri,
            )
        }
        if fact.digest:
            found["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=fact.digest
            )
        return names.checkpoint_dataset(fact.run_id, fact.round_index, fact.peer), found, None
    if isinstance(fact, SamplesFact):
        return (
            names.samples_dataset(fact.run_id, fact.round_index, fact.purpose),
            {
                "schema": _schema(_SAMPLE_FIELDS),
                "dataflywheel_samples": facets.SamplesDatasetFacet(
                    purpose=fact.purpose, samples=fact.samples, prompts=fact.prompts
                ),
            },
            fact.samples,
        )
    if isinstance(fact, ScoresFact):
        tallies = [
            {
                "name": v.name,
                "version": v.version,
                "scores": v.scores,
                "passed": v.passed,
                "unscorable": v.unscorable,
            }
            for v in fact.verifiers
        ]
        return (
            names.scores_dataset(fact.run_id, fact.round_index, fact.purpose),
            {
                "schema": _schema(_SCORE_FIELDS),
                "dataflywheel_verifiers": facets.VerifiersDatasetFacet(
                    purpose=fact.purpose, verifiers=tallies
                ),
            },
            fact.scores,
        )
    if isinstance(fact, DatasetFact):
        found = {
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=fact.digest
            ),
            "dataflywheel_dataset": facets.TrainingDatasetFacet(
                digest=fact.digest,
                objectKey=fact.object_key,
                kind=fact.kind,
                recipe=fact.recipe,
                rowCount=fact.row_count,
                stats=dict(fact.stats),
            ),
        }
        if fact.kind in _DATASET_FIELDS:
            found["schema"] = _schema(_DATASET_FIELDS[fact.kind])
        return (
            names.training_dataset(fact.run_id, fact.round_index, fact.name),
            found,
            fact.row_count,
        )
    if isinstance(fact, EvaluationFact):
        prompts = fact.metrics.get("prompts")
        return (
            names.evaluation_dataset(fact.run_id, fact.round_index, fact.eval_set),
            {
                "dataflywheel_evaluation": facets.EvaluationDatasetFacet(
                    evalSet=fact.eval_set,
                    primaryMetric=fact.primary_metric,
                    primaryValue=fact.primary_value,
                    metrics=dict(fact.metrics),
                )
            },
            prompts if isinstance(prompts, int) else None,
        )
    raise TypeError(f"not a lineage fact: {fact!r}")
