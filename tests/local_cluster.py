"""A multi-node Ray cluster of local processes, for tests, fault drills and benchmarks.

Runs in: a test or benchmark process (it starts and kills processes); a test harness, not
product code. Each
node is one ``ray start`` (``--head`` first, then ``--address``) with its own CPUs and
resources, a temp dir of its own and free ports, and a marker in its environment that every
process it spawns (raylet, GCS, agents, Ray workers) inherits. That marker is how
:meth:`LocalCluster.kill_node` SIGKILLs exactly one node and :meth:`LocalCluster.stop` the
whole cluster: never ``ray stop``, which stops every Ray on a shared machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil

MARK = "FLYWHEEL_RAY_CLUSTER_MARK"
NODE = "FLYWHEEL_RAY_NODE"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refresh_ray_auth() -> None:
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")  # re-reads RAY_AUTH_MODE, as ray.init does for a new local cluster
    AuthenticationTokenLoader.instance().reset_cache()


class LocalCluster:
    """Start with :meth:`start_head`, add nodes with :meth:`add_node`, point drivers at
    :attr:`address` with :attr:`driver_env` in their environment (this process:
    :meth:`join_process`), end with :meth:`stop`."""

    def __init__(self) -> None:
        self.mark = uuid.uuid4().hex
        # Short: Ray's Unix socket paths live below it and must stay under ~100 characters.
        self.temp = Path(tempfile.mkdtemp(prefix="fwray-", dir="/tmp"))
        self.port = _free_port()
        # Ray >= 2.59 authenticates clusters with a token: every node and driver share one.
        self.driver_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
        self.address: str | None = None
        self._node_of: dict[tuple[int, float], str | None] = {}  # (pid, start) -> node

    def join_process(self) -> dict[str, str | None]:
        """Make this process a client of the cluster: its token in the environment, and
        Ray's per-process caches of the auth mode and token refreshed (Ray reads them once,
        at import or first use). Returns the environment values to give to
        :meth:`leave_process`."""
        saved = {key: os.environ.get(key) for key in self.driver_env}
        os.environ.update(self.driver_env)
        _refresh_ray_auth()
        return saved

    @staticmethod
    def leave_process(saved: dict[str, str | None]) -> None:
        """Undo :meth:`join_process` (after ``ray.shutdown()``): without it, the next local
        ``ray.init`` in this process sends the cluster's token to its own new GCS and is
        refused (InvalidAuthToken)."""
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _refresh_ray_auth()

    def _start(self, name: str, args: list[str], extra: dict[str, str] | None = None) -> None:
        env = {
            **os.environ,
            **(extra or {}),
            **self.driver_env,
            MARK: self.mark,
            NODE: name,
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        ray = str(Path(sys.executable).parent / "ray")
        done = subprocess.run(
            [ray, "start", "--disable-usage-stats", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"ray start ({name}) failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )

    def start_head(self, num_cpus: int, resources: dict[str, float] | None = None) -> str:
        """Start the head node (no dashboard); returns the cluster address."""
        from ray.util import get_node_ip_address

        self.address = f"{get_node_ip_address()}:{self.port}"
        self._start(
            "head",
            ["--head", "--port", str(self.port), "--include-dashboard", "false",
             "--temp-dir", str(self.temp), "--num-cpus", str(num_cpus),
             "--resources", json.dumps(resources or {})],
        )  # fmt: skip
        return self.address

    def add_node(
        self,
        name: str,
        num_cpus: int,
        resources: dict[str, float] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Join a worker node called ``name`` (a label for :meth:`kill_node`); ``env`` is
        added to the environment of its processes (its Ray workers inherit it)."""
        if self.address is None:
            raise RuntimeError("start_head first")
        self._start(
            name,
            ["--address", self.address, "--num-cpus", str(num_cpus),
             "--resources", json.dumps(resources or {})],
            env,
        )  # fmt: skip

    def processes(self, node: str | None = None) -> list[psutil.Process]:
        """The live processes of this cluster (of one node when ``node`` is given): those
        carrying its mark, and their descendants (a Ray agent that renames itself may
        overwrite the memory its environment is read from)."""
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            try:
                key = (proc.pid, proc.create_time())
                if key not in self._node_of:  # an environment is read once per process
                    env = proc.environ()
                    self._node_of[key] = env.get(NODE) if env.get(MARK) == self.mark else None
                mine = self._node_of[key]
                if mine is not None and node in (None, mine) and proc.status() != "zombie":
                    found[proc.pid] = proc
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        for proc in list(found.values()):
            try:
                for child in proc.children(recursive=True):
                    if child.status() != "zombie":
                        found.setdefault(child.pid, child)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return list(found.values())

    def kill_node(self, node: str) -> list[int]:
        """SIGKILL every process of ``node`` at once, as a machine that dies would; returns
        their pids."""
        procs = self.processes(node)
        for proc in procs:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(procs, timeout=15)
        return [p.pid for p in procs]

    def stop(self) -> None:
        """Kill every process of the cluster, then remove its temp dir; raises if any
        survived (a process spawned while the first ones died is killed in a second pass)."""
        for _ in range(3):
            procs = self.processes()
            if not procs:
                break
            for proc in procs:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    continue
            psutil.wait_procs(procs, timeout=15)
        survivors = self.processes()
        shutil.rmtree(self.temp, ignore_errors=True)
        if survivors:
            raise RuntimeError(f"Ray cluster processes survived: {[p.pid for p in survivors]}")
