"""Sending OpenLineage events without ever slowing or failing a round.

Runs in: the flow process. ``Emitter.emit`` only puts the event on a bounded queue and
returns; one daemon thread drains the queue through ``OpenLineageClient`` and its HTTP
transport with a short timeout and no retries. An event that finds the queue full, or that
the receiver refuses or does not answer in time, is dropped: lineage is a view of the
database (which stays the record), so a lost event costs a gap in the graph, never a round.
The first drop logs one warning; later ones are only counted. ``flush`` waits for the queue
with a deadline (the end of a run), and the process never waits at exit for more than
``EXIT_DEADLINE_S``.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from dataflywheel.config import Settings

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000  # events; a round sends about 20, so only a dead receiver fills it
HTTP_TIMEOUT_S = 2.0  # per request: connect and read
FLUSH_DEADLINE_S = 2.0  # how long the end of a run waits for events still queued
EXIT_DEADLINE_S = 1.0  # how long process exit waits for them


class Emitter:
    """A bounded queue drained by one daemon thread that calls ``send`` per event."""

    def __init__(self, send: Callable[[Any], object], capacity: int = QUEUE_SIZE) -> None:
        self._send = send
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._warned = False
        self.sent = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._drain, name="openlineage-emitter", daemon=True)
        self._thread.start()

    def emit(self, event: Any) -> None:
        """Queue ``event``; never blocks and never raises."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._drop(f"the queue of {self._queue.maxsize} events is full")

    def warn_once(self, message: str) -> None:
        """Log ``message`` as this process's one OpenLineage warning, unless one was logged."""
        with self._lock:
            if self._warned:
                return
            self._warned = True
        log.warning("%s; further OpenLineage problems in this process are not logged.", message)

    def flush(self, timeout: float = FLUSH_DEADLINE_S) -> bool:
        """Wait up to ``timeout`` seconds for every queued event to be sent or dropped;
        returns whether the queue emptied."""
        deadline = time.monotonic() + timeout
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                done.wait(left)
        return True

    def _drain(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._send(event)
            except Exception as exc:  # any failure of the receiver or transport: drop
                self._drop(f"the receiver failed: {type(exc).__name__}: {exc}")
            else:
                with self._lock:
                    self.sent += 1
            finally:
                self._queue.task_done()

    def _drop(self, why: str) -> None:
        with self._lock:
            self.dropped += 1
        self.warn_once(
            f"OpenLineage event dropped ({why}); rounds go on, the database keeps the lineage"
        )


def http_emitter(settings: Settings) -> Emitter:
    """An emitter that posts to ``settings.openlineage_url`` (bearer ``openlineage_api_key``
    when set), flushed for at most ``EXIT_DEADLINE_S`` when the process exits."""
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.http import (
        ApiKeyTokenProvider,
        HttpConfig,
        HttpTransport,
        TokenProvider,
    )

    assert settings.openlineage_url, "OpenLineage is off: FLYWHEEL_OPENLINEAGE_URL is unset"
    key = settings.openlineage_api_key
    auth = ApiKeyTokenProvider({"apiKey": key.get_secret_value()}) if key else TokenProvider({})
    config = HttpConfig(
        url=settings.openlineage_url,
        endpoint=settings.openlineage_endpoint,
        timeout=HTTP_TIMEOUT_S,
        auth=auth,
        # The client retries five times with backoff by default: seconds per event against
        # a dead receiver, while the queue behind it fills. One try; a failure is a drop.
        retry={"total": 0, "connect": 0, "read": 0, "status": 0, "backoff_factor": 0},
    )
    client = OpenLineageClient(transport=HttpTransport(config))
    emitter = Emitter(client.emit)
    atexit.register(emitter.flush, EXIT_DEADLINE_S)
    return emitter
