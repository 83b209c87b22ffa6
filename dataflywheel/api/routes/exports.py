"""Parquet downloads made on the fly: a dataset's rows as trained, a round's samples with
their scores, a run's evaluations (the files ``flywheel export`` writes, without the card).

Runs in: the API process; reads only. The file is streamed a row group at a time from a
read-only snapshot of its own connection (the request's session has closed by the time the
body is sent). The generator is primed before the response starts: an unknown id is a 404 and
a dataset file missing from the store a 503, not a truncated body. The Parquet schema's
``dataflywheel.*`` metadata names the run, round and dataset the rows came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from dataflywheel.api.deps import Authenticated
from dataflywheel.api.errors import ApiError
from dataflywheel.api.schemas import ErrorBody
from dataflywheel.export import ExportError
from dataflywheel.export.exporter import (
    PURPOSES,
    DatasetTarget,
    EvaluationsTarget,
    SamplesTarget,
    Target,
    stream_parquet,
)
from dataflywheel.store import StoreError

router = APIRouter(tags=["exports"], dependencies=[Authenticated])
PARQUET = "application/vnd.apache.parquet"
BIG = 2**63 - 1
Id = Annotated[int, Path(ge=1, le=BIG)]
RESPONSES = {
    200: {"content": {PARQUET: {}}, "description": "A Parquet file, streamed."},
    401: {"model": ErrorBody},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    422: {"model": ErrorBody},
    503: {"model": ErrorBody},
}


def _parquet(request: Request, target: Target, filename: str) -> StreamingResponse:
    state = request.app.state
    store = state.store() if isinstance(target, DatasetTarget) else None
    chunks: Iterator[bytes] = stream_parquet(state.engine, target, store=store)
    try:
        first = next(chunks)  # resolves the target and fetches a dataset's file
    except StoreError as exc:
        raise ApiError(503, f"cannot read the dataset file: {exc}") from None
    except ExportError as exc:
        raise ApiError(409, str(exc)) from None
    return StreamingResponse(
        chain([first], chunks),
        media_type=PARQUET,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/datasets/{dataset_id}.parquet",
    response_class=StreamingResponse,
    responses=RESPONSES,
    summary="A dataset's rows as trained, as Parquet",
)
def dataset_parquet(dataset_id: Id, request: Request) -> StreamingResponse:
    """The dataset file's rows with each row's prompt, sample, scores and generating
    checkpoint (the columns of docs/export.md)."""
    return _parquet(request, DatasetTarget(dataset_id), f"dataset-{dataset_id}.parquet")


@router.get(
    "/runs/{run_id}/rounds/{index}/samples.parquet",
    response_class=StreamingResponse,
    responses=RESPONSES,
    summary="A round's samples with their scores, as Parquet",
)
def samples_parquet(
    run_id: Id,
    index: Annotated[int, Path(ge=0, le=2**31 - 1)],
    request: Request,
    purpose: Annotated[
        list[Literal["train", "eval", "baseline"]] | None,
        Query(description="Only samples of these purposes (repeatable); default: all."),
    ] = None,
) -> StreamingResponse:
    """One row per sample of round ``index``, in (purpose, prompt, sample index) order, with
    every verifier's verdict in the ``scores`` list."""
    purposes = tuple(p for p in PURPOSES if p in purpose) if purpose else PURPOSES
    return _parquet(
        request,
        SamplesTarget(run_id, index, purposes),
        f"run-{run_id}-round-{index}-samples.parquet",
    )


@router.get(
    "/runs/{run_id}/evaluations.parquet",
    response_class=StreamingResponse,
    responses=RESPONSES,
    summary="A run's evaluation results, as Parquet",
)
def evaluations_parquet(run_id: Id, request: Request) -> StreamingResponse:
    """One row per (evaluation, prompt) result of every evaluation of the run's checkpoints."""
    return _parquet(request, EvaluationsTarget(run_id), f"run-{run_id}-evaluations.parquet")
