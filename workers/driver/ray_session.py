"""The process's one connection to Ray, and the local Ray it may own.

Runs in: the flow process (the Ray driver): a ``flywheel`` command, or a flow run that a
Prefect worker started. The entry point connects once, before any concurrent work
(:func:`connect`); every later call from any thread is a no-op under one lock, so two
peers' tasks that reach Ray at the same moment share one Ray instead of starting two (``ray.init``
is not thread-safe: the second one used to start a second local Ray, and the process later
died with "Failed to connect to GCS").

With no ``FLYWHEEL_RAY_ADDRESS`` the process starts a local Ray and owns it: every process
of that Ray (GCS, raylet, agents, workers) inherits a mark in its environment, and a
record ``<data dir>/ray/<pid>.json`` names the mark and the owner. :func:`shutdown` (the
entry point calls it on success, error and Ctrl-C; ``atexit`` as a last resort) stops Ray
and kills whatever of it is still alive. A process killed with SIGKILL cannot do that, so
the next command calls :func:`reap` first: it finds the records of dead owners and kills
their Ray's processes by mark.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from dataflywheel import process_records
from dataflywheel.config import Settings

NAMESPACE = "flywheel"
MARK = "FLYWHEEL_LOCAL_RAY"  # the environment mark of every process of a local Ray we start
_LOCK = threading.RLock()
_owned: _Owned | None = None


class RayUnavailable(RuntimeError):
    """The configured Ray cluster does not answer; the message says what to do."""


@dataclass(frozen=True)
class _Owned:
    token: str
    record: Path
    # Set at shutdown: ends the thread that started the local Ray, where that is not the main
    # thread (see _init_in_a_lasting_thread).
    release: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Reaped:
    """What :func:`reap` cleaned up for one dead owner."""

    pid: int
    processes: int

    def __str__(self) -> str:
        if not self.processes:
            return (
                f"flywheel process {self.pid} ended without shutting down its local Ray, "
                "which had already exited"
            )
        return (
            f"stopped the local Ray left by flywheel process {self.pid}, which ended without "
            f"shutting it down ({self.processes} process(es))"
        )


def probe(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast, before any work is recorded, when the configured cluster does not answer
    (``ray.init`` would otherwise retry for a minute and then fail inside a task)."""
    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise RayUnavailable(
            f"the Ray cluster at FLYWHEEL_RAY_ADDRESS={address} does not answer ({exc}). "
            "Start it (`ray start --head --port PORT`) and point FLYWHEEL_RAY_ADDRESS at "
            "host:PORT (or ray://host:10001 for a Ray client), or unset FLYWHEEL_RAY_ADDRESS "
            "to use a local Ray"
        ) from exc


def records_dir(settings: Settings) -> Path:
    return settings.resolved_data_dir / "ray"


def connect(settings: Settings) -> None:
    """Connect this process to Ray once: the cluster at ``FLYWHEEL_RAY_ADDRESS``, else a
    local Ray that this process owns. Thread-safe and idempotent."""
    global _owned
    import ray

    with _LOCK:
        if ray.is_initialized():
            return
        probe(settings.ray_address)
        # Workers inherit the driver's environment; they need the same FLYWHEEL_* settings to
        # reach the database and the store.
        env = {k: v for k, v in os.environ.items() if k.startswith(("FLYWHEEL_", "VLLM_"))}
        env.pop(MARK, None)
        options: dict[str, Any] = {
            "namespace": NAMESPACE,
            "runtime_env": {"env_vars": env},
            "log_to_driver": False,
        }
        if settings.ray_address:
            try:
                ray.init(address=settings.ray_address, **options)
            except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
                raise RayUnavailable(
                    f"cannot connect to the Ray cluster at FLYWHEEL_RAY_ADDRESS="
                    f"{settings.ray_address}: {exc}. Start the cluster (`ray start --head`) and "
                    "give this process its token (RAY_AUTH_TOKEN, as on the cluster's nodes), "
                    "or unset FLYWHEEL_RAY_ADDRESS to use a local Ray"
                ) from exc
            return
        if settings.ray_num_gpus is not None:
            options["num_gpus"] = settings.ray_num_gpus
        token = uuid.uuid4().hex
        # The record first: a SIGKILL during ray.init still leaves what `reap` needs.
        owned = _Owned(token, process_records.write(records_dir(settings), token=token))
        os.environ[MARK] = owned.token  # inherited by the GCS and the raylet ray.init spawns,
        try:  # and by every worker and agent the raylet spawns in turn
            _init_in_a_lasting_thread(
                lambda: ray.init(include_dashboard=False, **options), owned.release
            )
        except BaseException:
            _kill_marked(owned.token)
            owned.record.unlink(missing_ok=True)
            raise
        finally:
            os.environ.pop(MARK, None)  # not for later children of ours that are not Ray's
        _owned = owned
        atexit.register(shutdown)


def _init_in_a_lasting_thread(init: Callable[[], object], release: threading.Event) -> None:
    """Run ``init`` (the local ``ray.init``) on a thread that lives as long as the process.

    Ray starts its GCS and raylet with the parent-death signal (``PR_SET_PDEATHSIG``), which
    Linux sends when the *thread* that started them exits, not the process. Started from a
    Prefect task's worker thread, the local Ray was killed as soon as that thread ended, and
    the process died a minute later with "Failed to connect to GCS within 60 seconds".
    The main thread lives as long as the process; any other caller hands the start to a
    daemon thread that stays until ``release`` is set (at shutdown) or the process ends.
    """
    if threading.current_thread() is threading.main_thread():
        init()
        return
    done = threading.Event()
    failure: list[BaseException] = []

    def keep() -> None:
        try:
            init()
        except BaseException as exc:
            failure.append(exc)
            done.set()
            return
        done.set()
        release.wait()  # the local Ray's processes die with this thread

    threading.Thread(target=keep, name="flywheel-local-ray", daemon=True).start()
    done.wait()
    if failure:
        raise failure[0]


def owns_local_ray() -> bool:
    """Whether this process started the local Ray it is connected to."""
    return _owned is not None


def shutdown(grace_s: float = 10.0) -> None:
    """Disconnect from Ray; a local Ray this process started is stopped, and any of its
    processes still alive after ``grace_s`` are killed. Safe to call more than once."""
    global _owned
    import ray

    with _LOCK:
        if ray.is_initialized():
            ray.shutdown()
        owned, _owned = _owned, None
        if owned is None:
            return
        owned.release.set()
        deadline = time.monotonic() + grace_s
        while _marked(owned.token) and time.monotonic() < deadline:
            time.sleep(0.2)  # agents and workers follow their raylet out by themselves
        _kill_marked(owned.token)
        owned.record.unlink(missing_ok=True)


def reap(settings: Settings) -> list[Reaped]:
    """Kill the local Rays whose owner process is gone (killed with SIGKILL, or crashed) and
    remove their records; a record whose owner still runs is left alone."""
    found: list[Reaped] = []
    for record in process_records.read(records_dir(settings)):
        if record.alive:
            continue
        token = record.doc.get("token")
        found.append(Reaped(pid=record.pid, processes=_kill_marked(token) if token else 0))
        record.remove()
    return found


def live_owners(settings: Settings) -> list[int]:
    """Pids of running processes that own a local Ray in this data directory."""
    return [r.pid for r in process_records.read(records_dir(settings)) if r.alive]


def _marked(token: str) -> list[psutil.Process]:
    """Live processes carrying ``token`` as their mark, with their descendants."""
    return _scan(lambda mark: mark == token)


def marked_processes() -> list[psutil.Process]:
    """Every live process of any local Ray that a flywheel process started (any owner)."""
    return _scan(bool)


def _scan(wanted: Callable[[str | None], bool]) -> list[psutil.Process]:
    """Live processes (this one excepted) whose mark ``wanted`` accepts, and their live
    descendants: a Ray agent that renames itself (``ray::DashboardAgent``) may overwrite the
    memory that ``/proc/<pid>/environ`` reads, and so lose its mark, but it stays the child
    of its raylet while that lives."""
    found: dict[int, psutil.Process] = {}
    me = os.getpid()
    for proc in psutil.process_iter():
        try:
            if proc.pid == me or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if wanted(proc.environ().get(MARK)):
                found[proc.pid] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    for proc in list(found.values()):
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                if child.pid != me and child.status() != psutil.STATUS_ZOMBIE:
                    found.setdefault(child.pid, child)
    return list(found.values())


def _kill_marked(token: str) -> int:
    """SIGKILL every process carrying ``token`` (twice over: a process spawned while the
    first ones died is caught by the second pass); returns how many were killed."""
    killed: set[int] = set()
    for _ in range(3):
        procs = _marked(token)
        if not procs:
            break
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
                killed.add(proc.pid)
        psutil.wait_procs(procs, timeout=10)
    return len(killed)
