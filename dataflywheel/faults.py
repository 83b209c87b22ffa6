"""Fault points: named places in a round where a crash test kills the flow process.

Runs in: the flow process (inside Prefect tasks). A test hook, off in normal use. With
``FLYWHEEL_TEST_PAUSE_AT=<stage>@<round index>`` (``Settings.test_pause_at``), the first
process that reaches that point writes ``<data dir>/test-pause/<point>`` and sleeps there
until it is killed; the marker also stops any later process (the ``flywheel resume`` that
follows) from pausing again. A test therefore kills at a point the work has provably
reached and not yet passed, instead of polling the database and racing the work.

The points, in the order of a round: ``generate`` (a peer's first generation shard is
committed), ``verify`` (the first verification shard is committed), ``select`` (the dataset
file is in the store, its row not yet written), ``train`` (a peer's checkpoint is trained
and uploaded, its row not yet final), ``evaluate`` (the evaluation samples are scored, the
evaluation not yet recorded), ``promote`` (the gate is about to be written) and ``round``
(the round's start, after the previous round finished). In Ray workers, ``score_shard`` (a
verification shard has started on a worker whose environment names the point: a test sets it
on one node only, to kill that node mid-shard).
"""

from __future__ import annotations

import os
import time

from dataflywheel.config import Settings

POINTS = ("generate", "verify", "select", "train", "evaluate", "promote", "round", "score_shard")


def pause_point(settings: Settings, stage: str, round_index: int | None = None) -> None:
    """Pause here forever when the settings name this point (``stage@round_index``, or
    ``stage`` alone where no round is known) and no process paused here before; otherwise
    return at once."""
    wanted = settings.test_pause_at
    if not wanted or wanted != (stage if round_index is None else f"{stage}@{round_index}"):
        return
    marker = settings.resolved_data_dir / "test-pause" / wanted
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # paused once already: a resumed run goes through
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    while True:  # until the test's SIGKILL
        time.sleep(3600)
