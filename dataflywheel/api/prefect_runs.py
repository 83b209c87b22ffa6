"""The API's edge to Prefect: start a deployment run of ``flywheel_run``, cancel one.

Runs in: the API process (sync handlers, in FastAPI's thread pool). A fresh
``SyncPrefectClient`` is pointed at the configured API URL per call, so the API never depends
on a process-global ``PREFECT_API_URL``. Every failure to reach Prefect, or a missing
deployment, becomes :class:`PrefectUnavailable` with a message that says what to fix; the
handler turns it into a 503.
"""

from __future__ import annotations

from typing import Any

import httpx


class PrefectUnavailable(RuntimeError):
    """Prefect cannot start or cancel the run now; the message says why and what to do."""


def _client(api_url: str, timeout: float) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api_url, httpx_settings={"timeout": timeout})


def _unreachable(api_url: str, exc: Exception) -> PrefectUnavailable:
    return PrefectUnavailable(
        f"the Prefect API at {api_url} is unreachable ({type(exc).__name__}: {exc}); start it "
        "(`flywheel server start`, or your Prefect server) or fix FLYWHEEL_PREFECT_API_URL, "
        "then retry"
    )


def start_run(
    api_url: str | None,
    deployment: str,
    parameters: dict[str, Any],
    *,
    name: str,
    timeout: float,
    idempotency_key: str | None = None,
) -> str:
    """Create a flow run of ``deployment`` ('flow/deployment') now; returns its id."""
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    if not api_url:
        raise PrefectUnavailable(
            "no Prefect API is configured for the API service: set FLYWHEEL_PREFECT_API_URL "
            "(or PREFECT_API_URL) to a running Prefect server"
        )
    try:
        with _client(api_url, timeout) as client:
            try:
                found = client.read_deployment_by_name(deployment)
            except ObjectNotFound:
                raise PrefectUnavailable(
                    f"the Prefect deployment {deployment!r} does not exist on {api_url}: run "
                    "`flywheel deploy` (or set FLYWHEEL_API_DEPLOYMENT to the right name)"
                ) from None
            flow_run = client.create_flow_run_from_deployment(
                found.id, parameters=parameters, name=name, idempotency_key=idempotency_key
            )
            return str(flow_run.id)
    except (httpx.TransportError, PrefectHTTPStatusError, httpx.HTTPStatusError) as exc:
        raise _unreachable(api_url, exc) from exc


def delete_run(api_url: str, flow_run_id: str, timeout: float) -> None:
    """Best effort: remove a flow run whose bookkeeping could not be committed."""
    try:
        with _client(api_url, timeout) as client:
            client.delete_flow_run(flow_run_id)
    except Exception:
        pass


def cancel_run(api_url: str | None, flow_run_id: str, *, timeout: float) -> str:
    """Ask Prefect to cancel the flow run; returns the state it is in afterwards.

    A run a worker has not picked up yet is cancelled outright; a running one goes to
    ``Cancelling`` and its worker stops the process.
    """
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
    from prefect.states import Cancelled, Cancelling

    if not api_url:
        raise PrefectUnavailable(
            "no Prefect API is configured for the API service: set FLYWHEEL_PREFECT_API_URL"
        )
    try:
        with _client(api_url, timeout) as client:
            try:
                flow_run = client.read_flow_run(flow_run_id)
            except ObjectNotFound:
                return "MISSING"
            current = flow_run.state.type if flow_run.state else None
            if current in (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED,
                           StateType.CANCELLED):  # fmt: skip
                return current.value
            waiting = current in (None, StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED)
            state = Cancelled(message="cancelled through the API") if waiting else Cancelling()
            result = client.set_flow_run_state(flow_run_id, state, force=waiting)
            return result.state.type.value if result.state else state.type.value
    except (httpx.TransportError, PrefectHTTPStatusError, httpx.HTTPStatusError) as exc:
        raise _unreachable(api_url, exc) from exc
