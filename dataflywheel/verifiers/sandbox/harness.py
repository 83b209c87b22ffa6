"""The program that runs *inside* the sandbox: each test step in two fresh child processes.

Runs in: the sandbox only, under an unprivileged uid, as the code object the supervisor
compiled from this file with the sandbox's own interpreter and sends ahead of the payload (see
``bootstrap.py``, which also sends ``plain.py`` and ``bridge.py``). It must not import anything
of dataflywheel but those two (nothing but the interpreter's standard library is visible
there) and it never runs candidate code itself. It refuses to run as root or outside a pid
namespace (its ``kill(-1)`` would hit the host).

Protocol. After the harness's code, stdin carries one ``marshal`` payload from the supervisor
(the candidate, the tests, the steps, the modules the tests import, the entry point, the
limits and a random per-run ``nonce``); fd 1 carries this process's JSON-lines records to the
supervisor (``ready``, ``syntax`` or ``tests_error``, one ``step`` per step, ``done``), each
with the nonce.

A step runs in two processes forked from this one (``bridge.py`` says what crosses between
them): the *tests' process*, which runs the tests and never any candidate code, and the
*candidate's process*, which runs the candidate program and answers the tests' calls with
plain data. The verdict of a step is the tests' process's report on a pipe that only it ever
holds (it is made after the tests' process is forked and closed before the candidate's is),
and it counts only if that process exited 0. Neither child has fd 1 (replaced by stderr before
anything runs), and every process here is non-dumpable (``prctl``; children inherit it), so a
process of the same uid can neither open another's ``/proc/<pid>/fd`` nor read or write its
memory. The candidate's process can kill or stop the others, which fails the step, never
passes it. Whatever either child prints goes to stderr, which the supervisor keeps (bounded)
but never reads a verdict from.

Start-up cost matters (every sample starts one of these), so it imports only built-in modules
(``posix``, not ``os``; ``_ctypes``, not ``ctypes``; no json or re), writes its few flat
records by hand and ends with ``_exit`` instead of an interpreter shutdown.
"""

import _signal as signal  # the plain module imports enum: slow to start
import builtins
import marshal
import posix as os  # the functions of os this file uses, without importing os (~1 ms)
import resource
import select
import sys
import time

from dataflywheel.verifiers.sandbox import bridge

# Modules whose globals change in normal use: not part of the tampering label.
VOLATILE = {"__main__", "sys", "builtins", "_io", "io", "os", "posix", "signal", "warnings"}
MAX_MESSAGE = 2000
# Taken before any candidate code exists: what the tampering label compares with.
_BUILTINS = builtins.__dict__
_gettrace, _getprofile = sys.gettrace, sys.getprofile


_ESCAPES = {i: f"\\u{i:04x}" for i in range(32)}
_ESCAPES.update({ord("\\"): "\\\\", ord('"'): '\\"'})


def _json(record):
    """JSON of a flat dict of str/int/float/bool/None (all this process ever writes)."""
    parts = []
    for key, value in record.items():
        if isinstance(value, str):
            value = '"' + value.translate(_ESCAPES) + '"'
        elif value is None or isinstance(value, bool):
            value = {None: "null", True: "true", False: "false"}[value]
        else:
            value = repr(value)
        parts.append(f'"{key}":{value}')
    return "{" + ",".join(parts) + "}"


def _now():
    return time.perf_counter()


def _set_limits(limits):
    cpu = limits["cpu_s"]
    pairs = (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (limits["memory_mb"] * 2**20,) * 2),
        (resource.RLIMIT_FSIZE, (limits["file_size_mb"] * 2**20,) * 2),
        (resource.RLIMIT_NOFILE, (limits["open_files"],) * 2),
        (resource.RLIMIT_NPROC, (limits["processes"],) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    )
    for kind, value in pairs:
        resource.setrlimit(kind, value)


def _undumpable():
    """PR_SET_DUMPABLE=0, inherited by every child: other processes of our uid can no longer
    open /proc/<pid>/fd/*, read or write /proc/<pid>/mem or ptrace us (they have no
    capabilities), so the candidate's process cannot reach the tests' or this one's.

    Called through ``_ctypes`` directly: ``import ctypes`` costs ~2 ms of every sample.
    """
    try:
        import _ctypes

        class Int(_ctypes._SimpleCData):
            _type_ = "i"

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = Int

        class Process:  # what CFuncPtr looks the symbol up in: this program and its libraries
            _handle = _ctypes.dlopen(None)

        return Function(("prctl", Process))(4, 0, 0, 0, 0) == 0
    except Exception:
        return False


def _snapshot():
    modules = {}
    for name, module in list(sys.modules.items()):
        if module is None or name in VOLATILE:
            continue
        try:
            modules[name] = (module, dict(vars(module)))
        except TypeError:
            continue
    unittest = sys.modules.get("unittest")
    classes = [(unittest.TestCase, dict(vars(unittest.TestCase)))] if unittest else []
    return modules, classes, dict(vars(builtins))


def _tampered(snapshot):
    """Names the candidate rebound in the modules the tests import, in builtins or in
    ``unittest.TestCase`` (at most 10). Run in the candidate's process, where it is a label
    (``tampering``) rather than a defence: the tests run in another process, which none of this
    reaches. Builtins are compared and then restored first, using no builtin function, so that
    the bridge's code that runs after the candidate's uses the real builtins.
    """
    modules, classes, saved_builtins = snapshot
    changed = ["builtins." + k for k, v in saved_builtins.items() if _BUILTINS.get(k) is not v]
    _BUILTINS.update(saved_builtins)
    if _gettrace() is not None or _getprofile() is not None:
        changed.append("sys.settrace/setprofile")
    for name, (module, saved) in modules.items():
        if sys.modules.get(name) is not module:
            changed.append(f"sys.modules[{name!r}]")
            continue
        live = vars(module)
        for key, value in saved.items():
            if live.get(key, changed) is not value:
                changed.append(name + "." + key)
    for cls, saved in classes:
        live = vars(cls)
        for key, value in saved.items():
            if live.get(key, changed) is not value:
                changed.append(cls.__name__ + "." + key)
    return changed[:10]


def _describe(exc):
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:  # a hostile __str__
        text = type(exc).__name__
    return text[:MAX_MESSAGE]


def _classify(exc):
    if isinstance(exc, AssertionError):
        return "assertion"
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, SystemExit):
        return "exit"
    if isinstance(exc, SyntaxError):
        return "syntax"
    return "exception"


def _report(writer, record):
    """The tests' process's record for the harness: one NUL-separated line."""
    for stream in (sys.stdout, sys.stderr):  # what the tests printed, for debugging
        try:  # noqa: SIM105 - contextlib would cost start-up time in every sandbox
            stream.flush()
        except BaseException:
            pass
    message = record["message"].replace("\0", " ").replace("\n", " ")[:MAX_MESSAGE]
    fields = (record["status"], record["error_class"] or "", record["stage"], message)
    os.write(writer, ("\0".join(fields) + "\n").encode("utf-8", "replace"))


def _run_tests(step, tests_code, requests, replies, writer, payload):
    """The tests' process: the candidate's names (from its process), the test module, then
    the step. No candidate code runs here; ``fail`` ends the step as soon as the candidate's
    process sends something that must not reach the tests."""
    stage = "candidate"

    def fail(error_class, message):
        _report(writer, {"status": "failed", "error_class": error_class, "stage": stage,
                         "message": message})  # fmt: skip
        os._exit(0)

    link = bridge.Link(requests, replies, fail, payload["allow_nan"], payload["entry_point"])
    try:
        namespace = {}
        link.bind(namespace)
        stage = "tests"
        namespace.update(__name__="__tests__", __builtins__=builtins)
        exec(tests_code, namespace)
        if step["call"] is not None:
            exec(compile(step["call"], "<step>", "exec"), namespace)
        link.finish()
        record = {"status": "passed", "error_class": None, "stage": "tests", "message": ""}
    except BaseException as error:
        record = {"status": "failed", "error_class": _classify(error), "stage": stage,
                  "message": _describe(error)}  # fmt: skip
    _report(writer, record)


def _kill_others():
    """SIGKILL every other process of this uid in the sandbox (grandchildren, fork bombs)."""
    try:  # noqa: SIM105 - contextlib would cost start-up time in every sandbox
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass


def _fork():
    deadline = _now() + 2.0
    while True:
        try:
            return os.fork()
        except BlockingIOError:  # RLIMIT_NPROC until the previous step's processes are reaped
            if _now() > deadline:
                raise
            time.sleep(0.01)


def _collect(pid, reader, deadline):
    """Read the child's record until a newline, its exit or the deadline.

    Returns (bytes, timed_out, reaped) where reaped is wait4's (status, rusage) when the
    child was already reaped here.
    """
    data = b""
    while b"\n" not in data and len(data) <= 65536:
        left = deadline - _now()
        if left <= 0:
            return data, True, None
        ready, _, _ = select.select([reader], [], [], min(left, 0.05))
        if ready:
            chunk = os.read(reader, 65536)
            if not chunk:
                break
            data += chunk
            continue
        pid_done, status, usage = os.wait4(pid, os.WNOHANG)
        if pid_done:
            # The child is gone but a grandchild may hold the pipe open: take what is there.
            ready, _, _ = select.select([reader], [], [], 0)
            if ready:
                data += os.read(reader, 65536)
            return data, False, (status, usage)
    return data, False, None


def _reap(pid, wait_s):
    """(status, rusage) of ``pid`` once it has exited, waiting up to ``wait_s``; else None."""
    deadline = _now() + wait_s
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        if _now() >= deadline:
            return None
        time.sleep(0.005)


def _signalled(status, usage, limits, whose):
    sig = os.WTERMSIG(status)
    over_cpu = usage.ru_utime + usage.ru_stime >= limits["cpu_s"] - 0.05
    kind = "timeout" if sig in (signal.SIGXCPU, signal.SIGKILL) and over_cpu else "crash"
    message = f"killed by signal {sig}" if whose == "candidate" else (
        f"the tests' process was killed by signal {sig}")  # fmt: skip
    return kind, message


def _gone(reaped, limits):
    """Why the candidate's process stopped answering, from how it ended."""
    if reaped is None:
        return "crash", "the candidate's process closed its end of the pipe during the step"
    status, usage = reaped
    if os.WIFSIGNALED(status):
        return _signalled(status, usage, limits, "candidate")
    return "crash", (f"the candidate's process exited (status {os.WEXITSTATUS(status)}) during "
                     "the step (os._exit, or a killed or replaced process)")  # fmt: skip


def _step(index, step, code, tests_code, payload):
    limits, timeout_s = payload["limits"], payload["test_timeout_s"]
    requests, replies, report = os.pipe(), os.pipe(), os.pipe()  # each (read end, write end)
    start = _now()
    tests_pid = _fork()  # first: the candidate's processes could use up RLIMIT_NPROC
    if tests_pid == 0:  # the tests' process: no candidate code ever runs in it
        try:
            for fd in (report[0], requests[0], replies[1]):
                os.close(fd)
            os.dup2(2, 1)  # fd 1 (the supervisor's channel) is gone from the child
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # no KeyboardInterrupt sent from outside
            _run_tests(step, tests_code, requests[1], replies[0], report[1], payload)
        finally:
            os._exit(0)
    os.close(report[1])  # before the candidate's process exists: it never holds this pipe
    candidate_pid = _fork()
    if candidate_pid == 0:
        try:
            for fd in (report[0], requests[1], replies[0]):
                os.close(fd)
            os.dup2(2, 1)
            # Taken here, not before the fork: fork() itself rebinds some globals (threading's
            # locks, in the child), which are not the candidate's doing.
            snapshot = _snapshot()
            bridge.serve(code, lambda: _tampered(snapshot), requests[0], replies[1],
                         payload["allow_nan"])  # fmt: skip
        finally:
            os._exit(0)
    for fd in (*requests, *replies):
        os.close(fd)
    data, timed_out, reaped = _collect(tests_pid, report[0], start + timeout_s)
    if timed_out:
        os.kill(tests_pid, signal.SIGKILL)
    status, usage = reaped if reaped is not None else os.wait4(tests_pid, 0)[1:]
    fields = data.decode("utf-8", "replace").rstrip("\n").split("\0")
    valid = len(fields) == 4 and fields[0] in ("passed", "failed")
    # How the candidate's process ended explains a step it left without an answer.
    gone = valid and fields[1] == "gone"
    candidate = _reap(candidate_pid, 0.5 if gone else 0)
    _kill_others()
    if candidate is None:
        os.wait4(candidate_pid, 0)
    os.close(report[0])
    result = {"step": index, "name": step["name"], "seconds": round(_now() - start, 4)}
    if timed_out:
        return dict(result, status="failed", error_class="timeout", stage=None,
                    message=f"over the {timeout_s:.3g} s test timeout (wall clock)")  # fmt: skip
    if os.WIFSIGNALED(status):
        kind, message = _signalled(status, usage, limits, "tests")
        return dict(result, status="failed", error_class=kind, stage=None, message=message)
    if not valid or os.WEXITSTATUS(status) != 0:
        return dict(result, status="failed", error_class="crash", stage=None,
                    message="the tests' process ended without reporting a result")  # fmt: skip
    if gone:
        kind, message = _gone(candidate, limits)
        return dict(result, status="failed", error_class=kind, stage=fields[2], message=message)
    return dict(result, status=fields[0], error_class=fields[1] or None, stage=fields[2],
                message=fields[3])  # fmt: skip


def _in_sandbox():
    """True under the sandbox's unprivileged uid as a child of its pid namespace's init."""
    return os.getuid() != 0 and os.getppid() == 1


def main():
    if not _in_sandbox():
        os.write(2, b"harness.py: refusing to run outside the sandbox (as root or outside a "
                 b"pid namespace its kill(-1) would hit the host)\n")  # fmt: skip
        os._exit(2)
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    payload = marshal.loads(b"".join(chunks))
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    nonce = payload["nonce"]

    def emit(record):
        record["nonce"] = nonce
        os.write(1, (_json(record) + "\n").encode("utf-8", "replace"))

    limits = payload["limits"]
    _set_limits(limits)
    undumpable = _undumpable()
    emit({"event": "ready", "undumpable": undumpable, "python": sys.version.split()[0]})
    # The modules the tests import are imported here, before any candidate code: both
    # processes of a step inherit them (no import in a step), and the tampering label covers
    # exactly what the tests rely on.
    for name in payload["imports"]:
        try:
            __import__(name)
        except Exception as exc:
            emit(
                {
                    "event": "tests_error",
                    "message": f"the tests import {name}: {_describe(exc)}",
                }
            )
            emit({"event": "done"})
            return
    try:
        code = compile(payload["candidate"], "<candidate>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        emit({"event": "syntax", "message": _describe(exc)})
        emit({"event": "done"})
        return
    tests_code = compile(payload["tests"], "<tests>", "exec")
    for index, step in enumerate(payload["steps"]):
        record = _step(index, step, code, tests_code, payload)
        emit(dict(record, event="step"))
    emit({"event": "done"})


if __name__ == "__main__":
    main()
    os._exit(0)  # every record is written (os.write); an interpreter shutdown only costs time
