"""OpenLineage events around a run, its rounds and their stages (off unless configured).

Runs in: the flow process, around the tasks (not a Prefect task itself). The flows wrap a
run in ``run_events``, a round in ``RoundEvents.round`` and each stage in
``RoundEvents.stage``: START when the block begins, COMPLETE when it ends (a stage's with its
inputs and outputs read from the database then, ``dataflywheel.db.stage_facts``) and FAIL
with the error when it raises. Without ``FLYWHEEL_OPENLINEAGE_URL`` every block is a plain
``yield``: nothing is read, built or imported. With it, events go through the process's one
``Emitter`` (a queue and a daemon thread), and nothing here may fail or stall a round: an
unreadable fact becomes an event without datasets and one warning.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from dataflywheel.db.session import session_scope
from tasks import context

if TYPE_CHECKING:
    from dataflywheel.lineage_events.emitter import Emitter
    from dataflywheel.lineage_events.facts import RunIdentity, StageFacts

log = logging.getLogger(__name__)
_lock = threading.Lock()
_current: tuple[tuple[Any, ...], Emitter | None] | None = None


def emitter() -> Emitter | None:
    """This process's emitter for the current settings; None when OpenLineage is off (or
    its client could not start: one warning, and the round goes on without events)."""
    global _current
    settings = context.settings()
    if not settings.openlineage_url:
        return None
    key = (settings.openlineage_url, settings.openlineage_endpoint, settings.openlineage_api_key)
    with _lock:
        if _current is None or _current[0] != key:
            from dataflywheel.lineage_events.emitter import http_emitter

            try:
                _current = (key, http_emitter(settings))
            except Exception as exc:
                log.warning("OpenLineage events off: the client did not start (%s)", exc)
                _current = (key, None)
        return _current[1]


def flush(timeout: float | None = None) -> bool:
    """Wait (up to ``timeout`` seconds, default ``FLUSH_DEADLINE_S``) for queued events."""
    from dataflywheel.lineage_events.emitter import FLUSH_DEADLINE_S

    sender = emitter()
    return (
        True if sender is None else sender.flush(FLUSH_DEADLINE_S if timeout is None else timeout)
    )


def _read(sender: Emitter, what: str, read: Any) -> Any:
    """``read(session)`` in a short unit of work, or None (and one warning) when the database
    does not answer: no wait for it to come back, unlike the tasks' sessions."""
    try:
        with session_scope(context.engine()) as session:
            return read(session)
    except Exception as exc:
        sender.warn_once(f"OpenLineage: {what} not read ({type(exc).__name__}: {exc})")
        return None


def _send(sender: Emitter, build: Callable[[], Any]) -> None:
    """Queue the event ``build()`` makes; a failure to build it is one warning, not an error."""
    try:
        event = build()
    except Exception as exc:
        sender.warn_once(f"OpenLineage event not built ({type(exc).__name__}: {exc})")
        return
    sender.emit(event)


def _identity(sender: Emitter, run_id: int) -> RunIdentity | None:
    from dataflywheel.db.stage_facts import run_identity

    return _read(sender, f"run {run_id}", lambda s: run_identity(s, run_id))


@contextmanager
def run_events(run_id: int) -> Iterator[None]:
    """START / COMPLETE / FAIL of flywheel run ``run_id``; at its end, wait a moment for the
    queue (``FLUSH_DEADLINE_S``), since the process may exit next."""
    sender = emitter()
    identity = None if sender is None else _identity(sender, run_id)
    if sender is None or identity is None:
        yield
        return
    from dataflywheel.lineage_events.events import RunState, run_event

    namespace = context.settings().openlineage_namespace
    _send(sender, partial(run_event, RunState.START, namespace, identity))
    try:
        yield
    except BaseException as exc:
        _send(sender, partial(run_event, RunState.FAIL, namespace, identity, error=exc))
        flush()
        raise
    _send(sender, partial(run_event, RunState.COMPLETE, namespace, identity))
    flush()


class RoundEvents:
    """The OpenLineage events of one round (``round_id``) and of its stages."""

    def __init__(self, round_id: int) -> None:
        self.round_id = round_id
        self._sender = emitter()
        self._where: tuple[RunIdentity, int] | None = None
        if self._sender is not None:
            self._where = _read(self._sender, f"round {round_id}", self._position)

    def _position(self, session: Any) -> tuple[RunIdentity, int]:
        from dataflywheel.db.stage_facts import round_position, run_identity

        run_id, index = round_position(session, self.round_id)
        return run_identity(session, run_id), index

    @contextmanager
    def round(self) -> Iterator[None]:
        """START / COMPLETE / FAIL of the round itself."""
        if self._sender is None or self._where is None:
            yield
            return
        from dataflywheel.lineage_events.events import RunState, round_event

        sender, (identity, index) = self._sender, self._where
        namespace = context.settings().openlineage_namespace
        _send(sender, partial(round_event, RunState.START, namespace, identity, index))
        try:
            yield
        except BaseException as exc:
            _send(
                sender, partial(round_event, RunState.FAIL, namespace, identity, index, error=exc)
            )
            raise
        _send(sender, partial(round_event, RunState.COMPLETE, namespace, identity, index))

    @contextmanager
    def stage(self, stage: str) -> Iterator[None]:
        """START / COMPLETE (with the stage's inputs and outputs) / FAIL of one execution of
        ``stage`` (a name of ``dataflywheel.lineage_events.names.STAGES``)."""
        if self._sender is None or self._where is None:
            yield
            return
        from openlineage.client.uuid import generate_new_uuid

        from dataflywheel.lineage_events.events import RunState, stage_event

        sender, (identity, index) = self._sender, self._where
        namespace = context.settings().openlineage_namespace
        run = str(generate_new_uuid())  # each execution of a stage is a run of its job
        where = (namespace, identity, index, stage, run)
        _send(sender, partial(stage_event, RunState.START, *where))
        try:
            yield
        except BaseException as exc:
            _send(sender, partial(stage_event, RunState.FAIL, *where, error=exc))
            raise
        facts = self._facts(sender, stage)
        _send(sender, partial(stage_event, RunState.COMPLETE, *where, facts=facts))

    def _facts(self, sender: Emitter, stage: str) -> StageFacts | None:
        from dataflywheel.db.stage_facts import stage_facts

        return _read(
            sender,
            f"the {stage} stage's datasets",
            lambda s: stage_facts(s, self.round_id, stage),
        )
