"""``/samples`` (filtered, keyset-paginated) and ``/prompts/{id}/samples`` (one prompt's
samples across rounds, for side-by-side comparison in the sample browser).

Runs in: the API process; reads only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request

from dataflywheel.api.deps import Authenticated, DbSession
from dataflywheel.api.errors import ApiError
from dataflywheel.api.schemas import ErrorBody, PromptRounds, SampleOut, SamplesPage
from dataflywheel.db import api_queries
from dataflywheel.db.api_queries import SampleFilter
from dataflywheel.db.models import Prompt

router = APIRouter(tags=["samples"], dependencies=[Authenticated])
E = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}}
BIG = 2**63 - 1
Id = Annotated[int | None, Query(ge=1, le=BIG)]
# Postgres text cannot hold NUL characters; refuse them as bad input instead of failing later.
Text = Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
Purpose = Literal["train", "eval", "baseline"]


@router.get("/samples", response_model=SamplesPage, responses=E, summary="Search samples")
def list_samples(
    request: Request,
    session: DbSession,
    run_id: Id = None,
    round_index: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    round_id: Id = None,
    prompt_id: Id = None,
    checkpoint_id: Id = None,
    purpose: Purpose | None = None,
    verifier: Text = None,
    passed: bool | None = None,
    min_score: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    max_score: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    q: Annotated[Text, Query(description="Substring of the completion or its prompt.")] = None,
    after_id: Annotated[int | None, Query(ge=0, le=BIG, description="Cursor: next_after.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SamplesPage:
    """Samples in id order with their prompt, round and verdicts. ``passed`` with
    ``verifier`` filters on that verifier's verdict, alone on any verifier's; ``min_score`` /
    ``max_score`` bound a verdict's value. Page with ``after_id=next_after``."""
    flt = SampleFilter(
        run_id=run_id,
        round_index=round_index,
        round_id=round_id,
        prompt_id=prompt_id,
        checkpoint_id=checkpoint_id,
        purpose=purpose,
        verifier=verifier,
        passed=passed,
        min_score=min_score,
        max_score=max_score,
        text=q,
    )
    rows = api_queries.search_samples(session, flt, after_id=after_id, limit=limit)
    items = [SampleOut(**row) for row in rows]
    return SamplesPage(items=items, next_after=items[-1].id if len(items) == limit else None)


@router.get(
    "/prompts/{prompt_id}/samples",
    response_model=PromptRounds,
    responses=E,
    summary="A prompt's samples across rounds",
)
def prompt_across_rounds(
    prompt_id: Annotated[int, Path(ge=1, le=BIG)],
    session: DbSession,
    run_id: Id = None,
    purpose: Purpose | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> PromptRounds:
    """Every sample of one prompt grouped by (run, round), oldest round first."""
    prompt = session.get(Prompt, prompt_id)
    if prompt is None:
        raise ApiError(404, f"prompt {prompt_id} does not exist")
    flt = SampleFilter(prompt_id=prompt_id, run_id=run_id, purpose=purpose)
    rows = api_queries.search_samples(session, flt, after_id=None, limit=limit)
    grouped: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for row in rows:
        grouped[(row["run_id"], row["round_index"])].append(
            SampleOut(**row).model_dump(mode="json")
        )
    return PromptRounds(
        prompt_id=prompt.id,
        prompt_text=prompt.text,
        reference=prompt.reference,
        rounds=[
            {"run_id": run, "round_index": index, "samples": samples}
            for (run, index), samples in sorted(grouped.items())
        ],
    )
