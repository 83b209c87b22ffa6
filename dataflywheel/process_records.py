"""Records of the processes that own something outside themselves (a local Ray, Prefect
flow runs), kept so that the next command can clean up after one that was killed.

Runs in: any process of ours. A record is ``<folder>/<pid>.json``: the owner's pid, its
start time (pids are reused: a record whose pid now belongs to another process is a dead
owner's) and what the owner chose to note. Written atomically, removed by the owner when it
ends normally; one left behind by a SIGKILL is what the cleanup reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil


@dataclass(frozen=True)
class Record:
    path: Path
    pid: int
    alive: bool
    doc: dict[str, Any]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def write(folder: Path, **notes: Any) -> Path:
    """Record this process in ``folder`` with ``notes``; returns the record's path."""
    me = psutil.Process()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{me.pid}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**notes, "pid": me.pid, "started": me.create_time()}))
    tmp.replace(path)
    return path


def read(folder: Path) -> Iterator[Record]:
    """Every record in ``folder``; an unreadable one (its writer killed mid-write) is removed."""
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            doc = json.loads(path.read_text())
            pid, started = int(doc["pid"]), float(doc["started"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        yield Record(path=path, pid=pid, alive=alive(pid, started), doc=doc)


def alive(pid: int, started: float) -> bool:
    """Whether ``pid`` is still the process that started at ``started``."""
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - started) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
