"""The supervisor: start the sandbox, feed it, bound it, kill it, and read the verdict records.

Runs in: any worker process (spawns sandboxed subprocesses). It never runs candidate code. One
call of :func:`run_sandboxed` is one sandbox: bubblewrap (new pid, network, ipc, uts and
cgroup namespaces; read-only /usr; a private size-capped /tmp; a cleared environment) runs
``harness.py`` under a fresh unprivileged uid (``setpriv``; RLIMIT_NPROC is not enforced for
root, so alone it does not stop a fork bomb, see
https://man7.org/linux/man-pages/man2/setrlimit.2.html). The wall-clock limit is enforced here,
from outside: SIGKILL to bubblewrap takes the sandbox's pid 1 and with it every process in the
namespace, and any process left with the sandbox uid is killed too.

The verdict is read only from the harness's JSON-lines records on the sandbox's stdout, each
carrying a per-run random nonce; inside, each step's verdict comes from a process that runs
the tests and never candidate code (``harness.py``, ``bridge.py``). What the candidate prints
goes to stderr and is kept, bounded, for debugging. ``docs/sandbox.md`` lists what this does
and does not protect against.
"""

from __future__ import annotations

import json
import marshal
import os
import secrets
import select
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from dataflywheel.verifiers.sandbox.bootstrap import BOOTSTRAP, HarnessCompileError, harness_code
from dataflywheel.verifiers.sandbox.config import SandboxConfig
from dataflywheel.verifiers.sandbox.steps import TestStep, imported_modules

INSTALL_HINT = "install it with `apt-get install -y bubblewrap` as root (README, Install)"
# Sandbox uids are drawn from a range no account uses, one per run, so RLIMIT_NPROC counts
# only that run's processes and the final sweep can kill by uid without touching anything else.
UID_BASE, UID_SPAN = 1_800_000_000, 2**24
MAX_RECORD_BYTES = 4 * 2**20
# Where bwrap and setpriv are looked up (not the caller's PATH: the sandbox binds /usr only).
TOOL_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"

Outcome = Literal["completed", "syntax", "timeout", "crashed", "tests_error"]


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start (bubblewrap missing, namespaces refused): an infrastructure
    error, never a verdict on the candidate."""


@dataclass(frozen=True)
class StepResult:
    """How one test step ended."""

    name: str
    status: Literal["passed", "failed"]
    error_class: str | None
    message: str
    seconds: float | None
    stage: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "error_class": self.error_class,
            "stage": self.stage,
            "message": self.message,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class SandboxResult:
    """What the supervisor saw: the outcome, one result per requested step, the output."""

    outcome: Outcome
    steps: list[StepResult]
    message: str
    seconds: float
    output: str = ""
    output_bytes: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (
            self.outcome == "completed"
            and bool(self.steps)
            and all(s.status == "passed" for s in self.steps)
        )


def _tool(name: str, hint: str) -> str:
    path = shutil.which(name, path=TOOL_PATH)
    if path is None:
        raise SandboxUnavailable(f"the code sandbox needs `{name}`, which is not installed: {hint}")
    return path


@cache
def _root_mounts() -> tuple[str, ...]:
    """/usr read-only, and the host's /bin, /lib... as the same symlinks or binds."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return tuple(args)


def build_command(config: SandboxConfig, uid: int) -> list[str]:
    """The bubblewrap command line that runs the harness (checks the tools exist)."""
    bwrap = _tool("bwrap", INSTALL_HINT)
    if not Path(config.python).is_file():
        raise SandboxUnavailable(
            f"sandbox interpreter {config.python!r} does not exist: install Debian's python3 "
            "(`apt-get install -y python3`) or set the sandbox's python field"
        )
    args = [bwrap, "--die-with-parent", "--new-session"]
    as_root = os.geteuid() == 0
    if as_root:
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        args += ["--unshare-cgroup-try"]
    else:  # an unprivileged user: bubblewrap maps it to `nobody` in a new user namespace
        # --unshare-all only *tries* a user namespace; --disable-userns needs a certain one.
        args += ["--unshare-all", "--unshare-user", "--disable-userns"]
        args += ["--uid", "65534", "--gid", "65534"]
    args += _root_mounts()
    args += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
    args += ["--perms", "1777", "--size", str(config.tmp_mb * 2**20), "--tmpfs", "/tmp"]
    args += ["--chdir", "/tmp", "--clearenv"]
    for key, value in (("PATH", "/usr/bin:/bin"), ("HOME", "/tmp"), ("LANG", "C.UTF-8")):
        args += ["--setenv", key, value]
    args.append("--")
    if as_root:
        setpriv = _tool("setpriv", "install util-linux (`apt-get install -y util-linux`)")
        args += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        args += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return args + [config.python, "-I", "-S", "-B", "-c", BOOTSTRAP]


def kill_uid(uid: int) -> int:
    """SIGKILL every process whose real uid is ``uid``; returns how many were signalled."""
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        line = next((x for x in status.splitlines() if x.startswith("Uid:")), "")
        if line.split()[1:2] == [str(uid)]:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


class _Channel:
    """Non-blocking pipes to and from the sandbox, serviced until EOF or a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes], payload: bytes, keep: int) -> None:
        assert proc.stdin and proc.stdout and proc.stderr
        self.selector = selectors.DefaultSelector()
        self.pending, self.keep = memoryview(payload), keep
        self.records, self.output, self.output_bytes = b"", b"", 0
        for pipe, events in ((proc.stdin, selectors.EVENT_WRITE),
                             (proc.stdout, selectors.EVENT_READ),
                             (proc.stderr, selectors.EVENT_READ)):  # fmt: skip
            os.set_blocking(pipe.fileno(), False)
            self.selector.register(pipe, events)
        self.proc = proc

    def pump(self, deadline: float) -> bool:
        """Service the pipes until both outputs closed (True) or the deadline (False)."""
        proc = self.proc
        while self.selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _ in self.selector.select(left):
                pipe = key.fileobj
                if pipe is proc.stdin:
                    try:
                        sent = os.write(proc.stdin.fileno(), self.pending[:65536])
                    except (BrokenPipeError, BlockingIOError) as exc:
                        sent = 0 if isinstance(exc, BlockingIOError) else len(self.pending)
                    self.pending = self.pending[sent:]
                    if not self.pending:
                        self.selector.unregister(pipe)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    self.selector.unregister(pipe)
                elif pipe is proc.stdout:
                    self.records += chunk
                    if len(self.records) > MAX_RECORD_BYTES:
                        return False  # the harness never writes this much: treat as broken
                else:
                    self.output_bytes += len(chunk)
                    room = self.keep - len(self.output)
                    if room > 0:
                        self.output += chunk[:room]
        return True

    def close(self) -> None:
        self.selector.close()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


def _exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to ``timeout`` s for bubblewrap to exit, woken by its pidfd the moment it does
    (``Popen.wait(timeout)`` polls with growing sleeps: ~0.6 ms a sample on average)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # already reaped, or a kernel without pidfd (< 5.3): poll instead
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        poller = select.poll()  # not select.select: a busy worker may hold fds past 1024
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(pidfd)


def _parse(records: bytes, nonce: str) -> tuple[list[dict[str, Any]], bool]:
    """The harness's records, and False if any line is not a record with our nonce."""
    parsed, clean = [], True
    for line in records.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            clean = False
            continue
        if not isinstance(record, dict) or record.get("nonce") != nonce:
            clean = False
            continue
        parsed.append(record)
    return parsed, clean


def _step_results(
    steps: Sequence[TestStep], records: list[dict[str, Any]], missing_class: str, why: str
) -> list[StepResult]:
    by_index = {r.get("step"): r for r in records if r.get("event") == "step"}
    results = []
    for index, step in enumerate(steps):
        r = by_index.get(index)
        if r is None or r.get("status") not in ("passed", "failed"):
            results.append(StepResult(step.name, "failed", missing_class, why, None))
            continue
        results.append(
            StepResult(
                name=step.name,
                status=r["status"],
                error_class=r.get("error_class"),
                message=str(r.get("message", ""))[:2000],
                seconds=r.get("seconds"),
                stage=r.get("stage"),
            )
        )
    return results


def run_sandboxed(
    candidate: str,
    tests: str,
    steps: Sequence[TestStep],
    config: SandboxConfig,
    entry_point: str | None = None,
) -> SandboxResult:
    """Run ``candidate`` against each test step in the sandbox; the supervisor decides.

    ``entry_point`` names the candidate's function that ``check(candidate)`` tests: its
    results must be plain data even if the candidate makes it a class. Raises
    :class:`SandboxUnavailable` when the sandbox cannot start. Everything the candidate can
    cause (a syntax error, a hang, a crash, killing the harness) is an outcome instead.
    """
    uid = UID_BASE + secrets.randbelow(UID_SPAN)
    command = build_command(config, uid)
    nonce = secrets.token_hex(16)
    payload = {
        "nonce": nonce,
        "candidate": candidate,
        "tests": tests,
        "steps": [{"name": s.name, "call": s.call} for s in steps],
        "imports": imported_modules(tests),
        "entry_point": entry_point,
        "allow_nan": config.allow_nan,
        "test_timeout_s": config.test_timeout_s,
        "limits": config.model_dump(
            include={"cpu_s", "memory_mb", "file_size_mb", "open_files", "processes"}
        ),
    }
    try:
        stdin = harness_code(config.python) + marshal.dumps(payload)
    except HarnessCompileError as exc:
        raise SandboxUnavailable(str(exc)) from exc
    start = time.monotonic()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={},
        close_fds=True,
        start_new_session=True,
    )
    channel = _Channel(proc, stdin, config.max_output_bytes)
    try:
        finished = channel.pump(start + config.timeout_s)
        if not finished:
            os.killpg(proc.pid, signal.SIGKILL)
        if not _exited(proc, 5.0):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        channel.close()
        # A clean exit of the sandbox's pid 1 already took every process in its namespace
        # with it; after a kill, or anything unusual, sweep the run's uid as well.
        swept = not finished or proc.returncode != 0
        leftovers = kill_uid(uid) if swept and os.geteuid() == 0 else 0
    seconds = time.monotonic() - start
    records, clean = _parse(channel.records, nonce)
    output = channel.output.decode("utf-8", errors="replace")
    events = {r.get("event") for r in records}
    info = {"returncode": proc.returncode, "killed_leftovers": leftovers}
    ready = next((r for r in records if r.get("event") == "ready"), None)
    if ready is None:
        if not finished:
            raise SandboxUnavailable(
                f"the sandbox did not start within timeout_s={config.timeout_s}s (machine "
                "overloaded?); raise the sandbox timeout"
            )
        raise SandboxUnavailable(
            f"the sandbox failed to start (exit status {proc.returncode}): "
            f"{output.strip()[-800:] or 'no message'}; check that bubblewrap works here: "
            "`bwrap --ro-bind /usr /usr --unshare-pid --unshare-net -- /usr/bin/true`"
        )
    info.update(python=ready.get("python"), undumpable=ready.get("undumpable"))
    if ready.get("undumpable") is not True:
        # Without it the candidate's process could write into the tests' process's memory.
        raise SandboxUnavailable(
            "the sandbox's harness could not make itself non-dumpable (prctl PR_SET_DUMPABLE "
            "through _ctypes): check that the sandbox interpreter has its _ctypes module"
        )
    common = {"seconds": seconds, "output": output, "output_bytes": channel.output_bytes}
    broken = next((r for r in records if r.get("event") == "tests_error"), None)
    if broken is not None and clean:
        message = str(broken.get("message", ""))[:2000]
        results = [StepResult(s.name, "failed", "tests_error", message, None) for s in steps]
        return SandboxResult("tests_error", results, message, info=info, **common)
    syntax = next((r for r in records if r.get("event") == "syntax"), None)
    if syntax is not None and clean:
        message = str(syntax.get("message", ""))[:2000]
        results = [StepResult(s.name, "failed", "syntax", message, None) for s in steps]
        return SandboxResult("syntax", results, message, info=info, **common)
    if not finished:
        why = f"not finished within the sample's {config.timeout_s:g} s wall-clock limit"
        results = _step_results(steps, records, "timeout", why)
        return SandboxResult("timeout", results, why, info=info, **common)
    if "done" not in events or not clean:
        why = (
            "the sandbox produced records without the run's nonce (forgery attempt)"
            if not clean
            else "the harness ended before reporting every test (killed from inside?)"
        )
        results = _step_results(steps, records if clean else [], "crash", why)
        return SandboxResult("crashed", results, why, info=info, **common)
    results = _step_results(steps, records, "crash", "no result reported for this test")
    unsupported = next((r for r in results if r.error_class == "tests_unsupported"), None)
    if unsupported is not None:  # the tests pass something that cannot cross: their fault
        return SandboxResult("tests_error", results, unsupported.message, info=info, **common)
    return SandboxResult("completed", results, "", info=info, **common)
