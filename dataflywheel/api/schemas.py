"""Response bodies of the HTTP API (what /docs and the OpenAPI schema describe).

Runs in: anywhere (pure declarations). Reports and lineage keep the JSON shapes documented in
:mod:`dataflywheel.reporting.document` and :mod:`dataflywheel.lineage_view` (the same
documents ``flywheel report --json`` and ``flywheel lineage --json`` print), so they are typed
here as objects rather than duplicated field by field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable code, e.g. not_found, unauthorized.")
    message: str = Field(description="What went wrong and how to fix it.")
    details: list[str] | None = Field(None, description="One 'field: problem' line each (422).")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    database: str = Field(description="PostgreSQL server version.")
    schema_revision: str | None = Field(description="Alembic revision of the database.")


class CreatedRun(BaseModel):
    run_id: int = Field(description="Our run id (runs.id).")
    prefect_flow_run_id: str = Field(description="The Prefect flow run executing it.")
    status: str
    deployment: str = Field(description="The Prefect deployment that was started.")


class RunSummary(BaseModel):
    id: int
    name: str
    status: str
    spec_hash: str
    prefect_flow_run_id: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunsPage(BaseModel):
    items: list[RunSummary]
    limit: int
    offset: int


class RunDetail(BaseModel):
    run: RunSummary
    spec: dict[str, Any] = Field(description="The validated run spec.")
    report: dict[str, Any] = Field(
        description="The run report (schema of `flywheel report --json`): per-round metrics."
    )


class RoundsPage(BaseModel):
    run_id: int
    primary_metric: str
    rounds: list[dict[str, Any]] = Field(description="Per-round entries of the run report.")


class Cancelled(BaseModel):
    run_id: int
    status: str = Field(description="Our run status after the request.")
    prefect_state: str = Field(description="The Prefect flow run's state after the request.")


class ScoreOut(BaseModel):
    verifier: str
    version: str
    value: float | None
    passed: bool | None
    status: str
    reason: str | None


class SampleOut(BaseModel):
    id: int
    run_id: int
    round_id: int
    round_index: int
    prompt_id: int
    prompt_set: str
    prompt_text: str
    reference: dict[str, Any] | None
    difficulty: int | None
    checkpoint_id: int = Field(description="The checkpoint that generated the sample.")
    purpose: str
    sample_index: int
    seed: int
    sampling_params: dict[str, Any]
    text: str
    completion_tokens: int | None
    finish_reason: str | None
    created_at: datetime
    scores: list[ScoreOut]


class SamplesPage(BaseModel):
    items: list[SampleOut]
    next_after: int | None = Field(
        description="Pass as after_id to get the next page; null on the last page."
    )


class PromptRounds(BaseModel):
    prompt_id: int
    prompt_text: str
    reference: dict[str, Any] | None
    rounds: list[dict[str, Any]] = Field(
        description="[{run_id, round_index, samples: [sample...]}] in round order."
    )


class DownloadFile(BaseModel):
    path: str = Field(description="Path inside the checkpoint folder ('' for a single file).")
    key: str
    size: int | None
    url: str


class Download(BaseModel):
    kind: str
    id: int
    object_key: str
    digest: str | None
    expires_in: int | None = Field(description="Seconds a presigned URL stays valid; null: API.")
    files: list[DownloadFile]
