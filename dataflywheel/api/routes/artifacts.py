"""Checkpoints and datasets: a checkpoint's lineage (the graph ``flywheel lineage --json``
prints), download links, and ``/objects/{key}`` which streams a local store's bytes.

Runs in: the API process; reads only.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import StreamingResponse

from dataflywheel.api import downloads
from dataflywheel.api.deps import Authenticated, DbSession
from dataflywheel.api.errors import ApiError
from dataflywheel.api.schemas import Download, DownloadFile, ErrorBody
from dataflywheel.db import api_queries
from dataflywheel.db.api_queries import StoredObject
from dataflywheel.lineage_view import checkpoint_lineage
from dataflywheel.store import StoreError, normalize_key
from dataflywheel.store.keys import digest_of_key

router = APIRouter(tags=["checkpoints and datasets"], dependencies=[Authenticated])
E = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}}
ObjectId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/checkpoints/{checkpoint_id}/lineage", responses=E, summary="A checkpoint's lineage")
def lineage(checkpoint_id: ObjectId, session: DbSession) -> dict[str, Any]:
    """Parents, the datasets each trained on, where their samples came from (run, round,
    generating checkpoint) and which verifiers passed them: the JSON of `flywheel lineage`."""
    return checkpoint_lineage(session, checkpoint_id)


def _download(request: Request, obj: StoredObject) -> Download:
    if obj.object_key is None:
        raise ApiError(409, f"{obj.kind} {obj.id} has no stored bytes yet (upload unfinished)")
    state = request.app.state
    store = state.store()

    def api_url(key: str) -> str:
        return str(request.url_for("download_object", key=key))

    make_link, expires = downloads.link_maker(
        state.settings, store, api_url, state.config.presign_expiry_s
    )
    try:
        files = downloads.files_of(store, obj.kind, obj.object_key)
    except StoreError as exc:
        raise ApiError(503, f"cannot read {obj.kind} {obj.id}'s manifest: {exc}") from None
    return Download(
        kind=obj.kind,
        id=obj.id,
        object_key=obj.object_key,
        digest=obj.digest,
        expires_in=expires,
        files=[DownloadFile(path=p, key=k, size=s, url=make_link(k)) for p, k, s in files],
    )


@router.get(
    "/checkpoints/{checkpoint_id}/download",
    response_model=Download,
    responses={**E, 409: {"model": ErrorBody}},
    summary="Download links for a checkpoint's files",
)
def download_checkpoint(checkpoint_id: ObjectId, request: Request, session: DbSession) -> Download:
    return _download(request, api_queries.checkpoint_object(session, checkpoint_id))


@router.get(
    "/datasets/{dataset_id}/download",
    response_model=Download,
    responses=E,
    summary="Download link for a dataset file",
)
def download_dataset(dataset_id: ObjectId, request: Request, session: DbSession) -> Download:
    return _download(request, api_queries.dataset_object(session, dataset_id))


@router.get(
    "/objects/{key:path}",
    name="download_object",
    response_class=StreamingResponse,
    responses={**E, 200: {"content": {"application/octet-stream": {}}}},
    summary="Stream an object of the local store",
)
def download_object(key: str, request: Request) -> StreamingResponse:
    """The bytes of ``key`` (``sha256/ab/<digest>``). The ``ETag`` is the sha256: check the
    bytes against it. On S3 use the presigned links of the download endpoints instead."""
    try:
        key = normalize_key(key)
    except StoreError:
        raise ApiError(404, f"{key!r} is not an object key (sha256/ab/<64 hex>)") from None
    path = downloads.local_path(request.app.state.store(), key)
    if path is None:
        raise ApiError(404, f"no object {key} in this API's local object store")
    return StreamingResponse(
        downloads.stream(path),
        media_type="application/octet-stream",
        headers={
            "ETag": f'"{digest_of_key(key)}"',
            "Content-Length": str(path.stat().st_size),
            "Content-Disposition": f'attachment; filename="{digest_of_key(key)}"',
        },
    )
