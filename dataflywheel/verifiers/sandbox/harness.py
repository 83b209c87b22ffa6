"""The program that runs *inside* the sandbox: it runs each test step in a fresh child process.

Runs in: the sandbox only, under an unprivileged uid, as the code object the supervisor
compiled from this file with the sandbox's own interpreter and sends ahead of the payload (see
``bootstrap.py``). It must not import dataflywheel (nothing but the
interpreter's standard library is visible there) and it never runs candidate code itself:
every step runs in a forked child. It refuses to run as root or outside a pid namespace (its
``kill(-1)`` would hit the host).

Protocol. After the harness's code, stdin carries one ``marshal`` payload from the supervisor
(the candidate, the tests, the steps, the modules the tests import, the limits and a random
per-run ``nonce``); fd 1 carries this process's JSON-lines records to the supervisor
(``ready``, ``syntax`` or ``tests_error``, one ``step`` per step, ``done``), each with the
nonce. A child gets no handle on fd 1 (it is replaced by stderr before any candidate code
runs, and this process is made non-dumpable so /proc/<ppid>/fd cannot reopen it); it reports
on a private pipe, and a step counts as passed only when the child wrote a record with the
nonce *and* exited 0 *and* the modules it shares with the tests were left untouched. Whatever
the candidate prints goes to stderr, which the supervisor keeps (bounded) but never reads a
verdict from.

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

# Modules whose globals change in normal use: not part of the tampering check.
VOLATILE = {"__main__", "sys", "builtins", "_io", "io", "os", "posix", "signal", "warnings"}
MAX_MESSAGE = 2000
# Taken before any candidate code exists: what the post-step checks rely on.
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
    """PR_SET_DUMPABLE=0: other processes of our uid can no longer open /proc/<us>/fd/*.

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
    """Names the candidate rebound in modules the tests share with it (at most 10).

    Builtins are compared and then restored first, using no builtin function, so that the
    harness code that runs after the candidate (this check, the classification, the report)
    runs with the real builtins.
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


def _run_step(code, tests_code, step, snapshot):
    """Child body: candidate, then the test module, then the step. Returns the record."""
    stage = "candidate"
    try:
        namespace = {"__name__": "__candidate__", "__builtins__": builtins}
        exec(code, namespace)
        stage = "tests"
        # The tests see the candidate's names but never its shadows of builtins, and they
        # look builtins up in the copy taken before the candidate ran.
        test_ns = {
            k: v for k, v in namespace.items() if k not in snapshot[2] and k != "__builtins__"
        }
        test_ns.update(__name__="__tests__", __builtins__=dict(snapshot[2]))
        exec(tests_code, test_ns)
        if step["call"] is not None:
            exec(compile(step["call"], "<step>", "exec"), test_ns)
        error = None
    except BaseException as exc:
        error = exc
    changed = _tampered(snapshot)
    if changed:
        return {"status": "failed", "error_class": "tampering", "stage": stage,
                "message": "modified shared state: " + ", ".join(changed)}  # fmt: skip
    if error is not None:
        return {"status": "failed", "error_class": _classify(error), "stage": stage,
                "message": _describe(error)}  # fmt: skip
    return {"status": "passed", "error_class": None, "stage": "tests", "message": ""}


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


def _step(index, step, code, tests_code, snapshot, nonce, limits, timeout_s):
    reader, writer = os.pipe()
    start = _now()
    pid = _fork()
    if pid == 0:  # the child: no candidate code has run in this process before this line
        try:
            os.close(reader)
            os.dup2(2, 1)  # fd 1 (the supervisor's channel) is gone from the child
            record = _run_step(code, tests_code, step, snapshot)
            for stream in (sys.stdout, sys.stderr):  # what the candidate printed, for debugging
                try:  # noqa: SIM105 - as above
                    stream.flush()
                except BaseException:
                    pass
            message = record["message"].replace("\0", " ").replace("\n", " ")
            fields = (nonce, str(index), record["status"], record["error_class"] or "",
                      record["stage"], message)  # fmt: skip
            os.write(writer, ("\0".join(fields) + "\n").encode("utf-8", "replace"))
        finally:
            os._exit(0)
    os.close(writer)
    data, timed_out, reaped = _collect(pid, reader, start + timeout_s)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    if reaped is None:
        _, status, usage = os.wait4(pid, 0)
    else:
        status, usage = reaped
    _kill_others()
    os.close(reader)
    seconds = round(_now() - start, 4)
    cpu = usage.ru_utime + usage.ru_stime
    result = {"step": index, "name": step["name"], "seconds": seconds}
    if timed_out:
        return dict(result, status="failed", error_class="timeout", stage=None,
                    message=f"over the {timeout_s:.3g} s test timeout (wall clock)")  # fmt: skip
    fields = data.decode("utf-8", "replace").rstrip("\n").split("\0")
    valid = len(fields) == 6 and fields[0] == nonce and fields[1] == str(index)
    valid = valid and fields[2] in ("passed", "failed")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        over_cpu = cpu >= limits["cpu_s"] - 0.05
        kind = "timeout" if sig in (signal.SIGXCPU, signal.SIGKILL) and over_cpu else "crash"
        return dict(result, status="failed", error_class=kind, stage=None,
                    message=f"killed by signal {sig}")  # fmt: skip
    if not valid:
        return dict(result, status="failed", error_class="crash", stage=None,
                    message="the test process ended without reporting a result "
                    "(os._exit, a killed or replaced process, or a forged report)")  # fmt: skip
    if os.WEXITSTATUS(status) != 0:
        return dict(result, status="failed", error_class="crash", stage=None,
                    message=f"exit status {os.WEXITSTATUS(status)}")  # fmt: skip
    return dict(result, status=fields[2], error_class=fields[3] or None, stage=fields[4],
                message=fields[5])  # fmt: skip


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
    # The modules the tests import are imported here, before any candidate code, so the
    # tampering check covers exactly what the tests rely on.
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
    snapshot = _snapshot()
    for index, step in enumerate(payload["steps"]):
        record = _step(
            index, step, code, tests_code, snapshot, nonce, limits, payload["test_timeout_s"]
        )
        emit(dict(record, event="step"))
    emit({"event": "done"})


if __name__ == "__main__":
    main()
    os._exit(0)  # every record is written (os.write); an interpreter shutdown only costs time
