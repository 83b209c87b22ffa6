"""Hostile code against the real sandbox: each attack is contained and scored correctly, and the
host is unharmed afterwards (no process left with a sandbox uid or under this test process,
host files and directories untouched, secrets not visible).

Every attack is written so that, *if it worked*, the sample would pass: the tests assert the
attack's success. So "contained" is checked by the verdict as well as on the host.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import build
from dataflywheel.verifiers.sandbox import SandboxConfig, SandboxUnavailable, bootstrap, supervisor

FAST = {"test_timeout_s": 2.0, "timeout_s": 15.0, "cpu_s": 2, "max_output_bytes": 4096}
CHECK = "def check(candidate):\n    assert candidate() == {expected!r}\n"


def sandbox_pids() -> list[int]:
    """Processes whose real uid lies in the range the supervisor draws sandbox uids from."""
    found = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if uids and supervisor.UID_BASE <= uids.real < supervisor.UID_BASE + supervisor.UID_SPAN:
            found.append(proc.pid)
    return found


@pytest.fixture(autouse=True)
def host_unharmed():
    # In the whole suite this process already has children of its own (the session's Prefect
    # server, local Ray, whose raylet may start workers at any time): only new direct children
    # count — a sandbox is one (bwrap), and anything that escaped it would show in sandbox_pids.
    children_before = {c.pid for c in psutil.Process().children()}
    before = sandbox_pids()
    yield
    # The sandbox is gone when run_sandboxed returns: nothing may linger, not even briefly.
    left = [c for c in psutil.Process().children() if c.pid not in children_before]
    assert left == []
    assert sandbox_pids() == before == []


def verifier(**sandbox):
    return build({"name": "code_tests", "program": "completion", "sandbox": {**FAST, **sandbox}})


def prompt(tests: str, entry_point: str | None = "f") -> Prompt:
    reference = {"entry_point": entry_point} if entry_point else None
    return Prompt("hostile", "eval", "write f", reference=reference, tests=tests)


def run(code: str, expected: object = True, **sandbox):
    return verifier(**sandbox).score(code, prompt(CHECK.format(expected=expected)))


def test_baseline_honest_candidate_passes():
    score = run("def f():\n    return True\n")
    assert score.passed and score.reason == "tests_passed"
    assert score.details["tests"][0]["status"] == "passed"


def test_fork_bomb_is_contained():
    code = (
        "import os\n"
        "def f():\n"
        "    while True:\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            pass\n"
    )
    start = time.monotonic()
    score = run(code)
    assert not score.passed and score.status == "scored"
    assert score.details["error_class"] in ("timeout", "crash")
    assert time.monotonic() - start < 10
    assert len(psutil.pids()) < 2000  # the host can still count its processes


def test_memory_bomb_is_a_memory_failure():
    code = "def f():\n    hog = []\n    while True:\n        hog.append(bytearray(64 * 2**20))\n"
    score = run(code, memory_mb=256)
    assert not score.passed
    assert score.details["error_class"] == "memory"


def test_infinite_loop_times_out():
    score = run("def f():\n    while True:\n        pass\n")
    assert not score.passed and score.details["error_class"] == "timeout"


def test_cpu_spin_ignoring_signals_is_killed():
    code = (
        "import signal\n"
        "for s in (signal.SIGTERM, signal.SIGALRM, signal.SIGXCPU, signal.SIGINT, signal.SIGHUP):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        "def f():\n"
        "    x = 0\n"
        "    while True:\n"
        "        x += 1\n"
    )
    # The wall-clock limit is far away: the CPU rlimit (SIGKILL at cpu_s + 1) must end it.
    score = run(code, test_timeout_s=60.0, timeout_s=90.0, cpu_s=1)
    assert not score.passed and score.details["error_class"] == "timeout"
    assert score.details["tests"][0]["message"] == "killed by signal 9"
    assert score.details["tests"][0]["seconds"] < 60


def test_whole_sample_wall_clock_limit_is_enforced_from_outside():
    # Two steps of 2 s each cannot fit in a 1.5 s sample budget: the supervisor kills it.
    tests = "def test_a():\n    f()\n\ndef test_b():\n    f()\n"
    code = "import time\ndef f():\n    time.sleep(60)\n"
    start = time.monotonic()
    score = verifier(timeout_s=1.5, test_timeout_s=1.5).score(code, prompt(tests, None))
    assert time.monotonic() - start < 4
    assert not score.passed and score.details["outcome"] == "timeout"
    assert [t["error_class"] for t in score.details["tests"]] == ["timeout", "timeout"]


def test_network_is_unreachable_even_on_host_loopback():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[object] = []
    server.settimeout(3)

    def accept() -> None:
        with contextlib.suppress(OSError):
            accepted.append(server.accept())

    thread = threading.Thread(target=accept)
    thread.start()
    code = (
        "import socket\n"
        "def f():\n"
        "    hits = 0\n"
        f"    for host, port in (('127.0.0.1', {port}), ('1.1.1.1', 53), ('8.8.8.8', 443)):\n"
        "        try:\n"
        "            socket.create_connection((host, port), timeout=1).close()\n"
        "            hits += 1\n"
        "        except OSError:\n"
        "            pass\n"
        "    return hits\n"
    )
    score = run(code, expected=3)
    thread.join()
    server.close()
    assert not score.passed and score.details["error_class"] == "assertion"
    assert accepted == []


def test_writes_outside_the_sandbox_leave_the_host_untouched(tmp_path):
    marker = f"flywheel-pwned-{secrets.token_hex(4)}"
    targets = [
        Path("/tmp") / marker,
        tmp_path / marker,
        Path("/root") / marker,
        Path("/usr") / marker,
        Path(__file__).parent / marker,
    ]
    code = (
        "def f():\n"
        "    written = 0\n"
        f"    for path in {[str(t) for t in targets]!r}:\n"
        "        try:\n"
        "            with open(path, 'w') as handle:\n"
        "                handle.write('pwned')\n"
        "            written += 1\n"
        "        except OSError:\n"
        "            pass\n"
        "    return written\n"
    )
    score = run(code, expected=len(targets))
    assert not score.passed
    for target in targets:
        assert not target.exists(), target


def test_host_environment_is_invisible(monkeypatch):
    secret = f"postgresql+psycopg://flywheel:{secrets.token_hex(8)}@db:5432/flywheel"
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    code = (
        "import os\n"
        "def f():\n"
        "    seen = ' '.join(os.environ.values())\n"
        "    for pid in os.listdir('/proc'):\n"
        "        try:\n"
        "            seen += open(f'/proc/{pid}/environ').read()\n"
        "        except OSError:\n"
        "            pass\n"
        "    print(seen)\n"
        "    return os.environ.get('FLYWHEEL_DATABASE_URL')\n"
    )
    score = run(code, expected=secret)
    assert not score.passed and score.details["error_class"] == "assertion"
    assert secret not in score.details["output"]


def test_host_files_are_invisible(tmp_path):
    secret = secrets.token_hex(16)
    world_readable = tmp_path / "credentials"
    world_readable.write_text(secret)
    world_readable.chmod(0o644)
    in_root = Path("/root") / f"flywheel-secret-{secrets.token_hex(4)}"
    in_root.write_text(secret)
    try:
        code = (
            "def f():\n"
            "    found = ''\n"
            f"    for path in {[str(world_readable), str(in_root), '/etc/shadow']!r}:\n"
            "        try:\n"
            "            found += open(path).read()\n"
            "        except OSError:\n"
            "            pass\n"
            "    print(found)\n"
            "    return found\n"
        )
        score = run(code, expected=secret)
    finally:
        in_root.unlink()
    assert not score.passed and score.details["error_class"] == "assertion"
    assert secret not in score.details["output"]


def test_huge_output_is_bounded_and_does_not_change_the_verdict():
    code = (
        "import sys\n"
        "for _ in range(40):\n"
        "    sys.stdout.write('x' * 2**20)\n"
        "def f():\n"
        "    return True\n"
    )
    score = run(code)
    assert score.passed
    assert len(score.details["output"].encode()) <= FAST["max_output_bytes"]
    assert score.details["output_bytes"] >= 40 * 2**20


@pytest.mark.parametrize(
    ("attack", "error_class"),
    [
        ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", "crash"),
        # pid 1 is bubblewrap's init, owned by root: PermissionError in the candidate.
        ("import os, signal\nos.kill(1, signal.SIGKILL)\n", "exception"),
        ("import os, signal\nos.kill(-1, signal.SIGKILL)\n", "crash"),
        ("import os, signal\nos.killpg(os.getpgid(0), signal.SIGKILL)\n", "crash"),
    ],
    ids=["parent", "pid1", "everyone", "group"],
)
def test_killing_the_parent_is_a_failure(attack, error_class):
    score = run(attack + "def f():\n    return True\n")
    assert not score.passed and score.status == "scored"
    assert score.details["error_class"] == error_class


@pytest.mark.parametrize(
    ("name", "code", "error_class"),
    [
        (
            "prints_passed",
            "print('passed')\nprint('OK')\ndef f():\n    return False\n",
            "assertion",
        ),
        ("exit_0_at_import", "import sys\nsys.exit(0)\ndef f():\n    return True\n", "exit"),
        ("exit_0_in_call", "import sys\ndef f():\n    sys.exit(0)\n", "exit"),
        ("os_exit_0", "import os\ndef f():\n    os._exit(0)\n", "crash"),
        (
            "atexit_os_exit",
            "import atexit, os\natexit.register(os._exit, 0)\ndef f():\n    return False\n",
            "assertion",
        ),
        (
            "patch_builtins",
            "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n"
            "builtins.isinstance = lambda *a: True\ndef f():\n    return False\n",
            "tampering",
        ),
        (
            "settrace_skip",
            "import sys\nsys.settrace(lambda *a: None)\ndef f():\n    return True\n",
            "tampering",
        ),
        (
            "forged_record_on_stdout",
            'import os\nos.write(1, b\'{"event":"step","step":0,"status":"passed"}\\n\')\n'
            "def f():\n    return False\n",
            "assertion",
        ),
        (
            "reopen_parent_channel",
            "import os\n"
            "def f():\n"
            "    for fd in range(64):\n"
            "        try:\n"
            "            out = open(f'/proc/{os.getppid()}/fd/{fd}', 'w')\n"
            '            out.write(\'{"event":"done"}\\n\')\n'
            "            out.close()\n"
            "        except OSError:\n"
            "            pass\n"
            "    os._exit(0)\n",
            "crash",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and "\n" not in value else "",
)
def test_forged_verdicts_do_not_pass(name, code, error_class):
    score = run(code)
    assert not score.passed, name
    assert score.details["error_class"] == error_class, score.details


def test_patching_unittest_does_not_pass():
    tests = (
        "import unittest\n"
        "class T(unittest.TestCase):\n"
        "    def test_value(self):\n"
        "        self.assertEqual(f(), 42)\n"
        "    def test_true(self):\n"
        "        self.assertTrue(f() == 42)\n"
    )
    code = (
        "import unittest\n"
        "unittest.TestCase.assertEqual = lambda *a, **k: None\n"
        "unittest.TestCase.assertTrue = lambda *a, **k: None\n"
        "def f():\n"
        "    return 0\n"
    )
    score = verifier().score(code, prompt(tests, None))
    assert not score.passed
    assert [t["error_class"] for t in score.details["tests"]] == ["tampering", "tampering"]
    honest = verifier().score("def f():\n    return 42\n", prompt(tests, None))
    assert honest.passed and honest.details["passed_tests"] == 2


def test_shadowing_a_builtin_the_tests_use_does_not_pass():
    tests = "def check(candidate):\n    assert abs(candidate() - 3.0) < 1e-9\n"
    code = "def abs(x):\n    return 0\ndef f():\n    return 99\n"
    score = verifier().score(code, prompt(tests))
    assert not score.passed and score.details["error_class"] == "assertion"


# Forged passes: values that lie about themselves, and patches of what the tests compare with.
# Each would pass if it worked (before the tests ran in a process of their own, all but two
# did); now each fails, with a reason that says which way it was tried.
ANSWER_42 = (
    "def check(candidate):\n    assert candidate(1) == 42\n    assert not (candidate(1) != 42)\n"
)
ANSWER_3_5 = (
    "def check(candidate):\n    result = candidate(1)\n    assert abs(result - 3.5) < 1e-6\n"
)


def restoring(module: str, attribute: str, fake: str, value: str) -> str:
    """A candidate that patches ``module.attribute`` in its call and restores it as soon as
    the old harness's tampering check starts (a profile hook), so the check sees nothing."""
    return (
        f"import {module}, sys\n"
        f"real = {module}.{attribute}\n"
        "def restore(frame, event, arg):\n"
        "    if frame.f_code.co_name == '_tampered':\n"
        f"        {module}.{attribute} = real\n"
        "        sys.setprofile(None)\n"
        "def f(x):\n"
        f"    {module}.{attribute} = {fake}\n"
        "    sys.setprofile(restore)\n"
        f"    return {value}\n"
    )


FORGERIES = [
    (
        "eq_always_true",
        "class Liar:\n    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n"
        "def f(x):\n    return Liar()\n",
        ANSWER_42,
        "forged_value",
        "object of class Liar",
    ),
    (
        "int_subclass_eq",
        "class Int(int):\n    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n    __hash__ = int.__hash__\n"
        "def f(x):\n    return Int(0)\n",
        ANSWER_42,
        "forged_value",
        "a subclass of int that redefines __eq__",
    ),
    (
        "str_subclass_eq_hash",
        "class Str(str):\n    def __eq__(self, other):\n        return True\n"
        "    def __hash__(self):\n        return hash('forty-two')\n"
        "def f(x):\n    return Str('')\n",
        "def check(candidate):\n    assert candidate(1) in {'forty-two'}\n"
        "    assert candidate(1) == 'forty-two'\n",
        "forged_value",
        "a subclass of str that redefines __eq__, __hash__",
    ),
    (
        "list_subclass_eq",
        "class List(list):\n    def __eq__(self, other):\n        return True\n"
        "def f(x):\n    return List()\n",
        "def check(candidate):\n    assert candidate(1) == [4, 2]\n",
        "forged_value",
        "a subclass of list",
    ),
    (
        "int_subclass_bool",  # a constant 4 that claims to be false where the answer is 0
        "class Count(int):\n    def __bool__(self):\n        return False\n"
        "def f(n):\n    return Count(4)\n",
        "def check(candidate):\n    assert not candidate(1)\n    assert candidate(10) == 4\n",
        "forged_value",
        "redefines __bool__",
    ),
    (
        "repr_and_str_mimic",
        "class Mimic:\n    def __repr__(self):\n        return '[4, 2]'\n    __str__ = __repr__\n"
        "def f(x):\n    return Mimic()\n",
        "def check(candidate):\n    assert repr(candidate(1)) == '[4, 2]'\n"
        "    assert str(candidate(1)) == '[4, 2]'\n",
        "forged_value",
        "object of class Mimic",
    ),
    (
        "float_subclass",
        "class Float(float):\n    def __sub__(self, other):\n        return 0.0\n"
        "def f(x):\n    return Float(0.0)\n",
        ANSWER_3_5,
        "forged_value",
        "a subclass of float that redefines __sub__",
    ),
    (
        "proxy_getattr",
        "class Proxy:\n    def __getattr__(self, name):\n        return lambda *a, **k: True\n"
        "def f(x):\n    return Proxy()\n",
        "def check(candidate):\n    assert candidate(1).startswith('forty')\n"
        "    assert candidate(1).endswith('two')\n",
        "forged_value",
        "object of class Proxy",
    ),
    (
        # The entry point made a class (through an alias): its calls still return plain data.
        "proxy_class_as_entry_point",
        "class Proxy:\n    def __init__(self, *args):\n        pass\n"
        "    def __getattr__(self, name):\n        return lambda *a, **k: True\n"
        "f = Proxy\n",
        "def check(candidate):\n    assert candidate(1).startswith('forty')\n",
        "forged_value",
        "object of class Proxy",
    ),
    (
        "metaclass_eq",
        "class Meta(type):\n    def __eq__(cls, other):\n        return True\n"
        "    def __ne__(cls, other):\n        return False\n    __hash__ = type.__hash__\n"
        "class Answer(metaclass=Meta):\n    pass\n"
        "def f(x):\n    return Answer\n",
        ANSWER_42,
        "forged_value",
        "the class Answer (of metaclass Meta)",
    ),
    (
        "nan",
        "def f(x):\n    return float('nan')\n",
        "def check(candidate):\n    assert not abs(candidate(1) - 3.5) > 1e-6\n"
        "    assert not candidate(1) < 3.5 and not candidate(1) > 3.5\n",
        "forged_value",
        "NaN",
    ),
    (
        "stop_iteration_ends_the_tests_loop",
        "def f(x):\n    raise StopIteration\n",
        "def check(candidate):\n"
        "    for got, want in zip(map(candidate, [1, 2]), [42, 43]):\n"
        "        assert got == want\n",
        "exception",
        "the candidate raised StopIteration",
    ),
    (
        "patch_the_tests_globals_through_frames",
        "import sys\n"
        "def f(x):\n    sys._getframe(1).f_globals['abs'] = lambda value: 0\n    return 0.0\n",
        ANSWER_3_5,
        "assertion",
        "",
    ),
    (
        "patch_the_tests_builtins_through_frames",
        "import sys\n"
        "def f(x):\n    sys._getframe(1).f_builtins['abs'] = lambda value: 0\n    return 0.0\n",
        ANSWER_3_5,
        "assertion",
        "",
    ),
    (
        "jump_over_the_asserts_with_a_tracer",
        "import sys\n"
        "def f(x):\n"
        "    caller = sys._getframe(1)\n"
        "    target = caller.f_code.co_firstlineno + 4\n"
        "    def tracer(frame, event, arg):\n"
        "        if frame is caller and event == 'line' and frame.f_lineno < target:\n"
        "            frame.f_lineno = target\n"
        "            frame.f_trace = None\n"
        "            sys.settrace(None)\n"
        "        return tracer\n"
        "    caller.f_trace = tracer\n"
        "    sys.settrace(tracer)\n"
        "    return 0\n",
        "def check(candidate):\n    result = candidate(1)\n    assert result == 42\n"
        "    assert result == 43\n    result = None\n",
        "assertion",
        "",
    ),
    (
        "patch_math_isclose_and_restore",
        restoring("math", "isclose", "lambda *a, **k: True", "0.0"),
        "import math\n"
        "def check(candidate):\n    result = candidate(1)\n    assert math.isclose(result, 3.5)\n",
        "assertion",
        "",
    ),
    (
        "patch_operator_eq_and_restore",
        restoring("operator", "eq", "lambda *a: True", "0"),
        "import operator\n"
        "def check(candidate):\n    result = candidate(1)\n    assert operator.eq(result, 42)\n",
        "assertion",
        "",
    ),
    (
        "patch_builtins_isinstance_and_abs",
        "import builtins\n"
        "def f(x):\n    builtins.isinstance = lambda *a: True\n"
        "    builtins.abs = lambda value: 0\n    return 'nope'\n",
        "def check(candidate):\n    result = candidate(1)\n    assert isinstance(result, float)\n"
        "    assert abs(result - 3.5) < 1e-6\n",
        "assertion",
        "",
    ),
    (
        "swap_sys_modules_and_restore",
        "import math, sys, types\n"
        "def restore(frame, event, arg):\n"
        "    if frame.f_code.co_name == '_tampered':\n"
        "        sys.modules['math'] = math\n"
        "        sys.setprofile(None)\n"
        "def f(x):\n"
        "    fake = types.ModuleType('math')\n"
        "    fake.isclose = lambda *a, **k: True\n"
        "    sys.modules['math'] = fake\n"
        "    sys.setprofile(restore)\n"
        "    return 0.0\n",
        "def check(candidate):\n    result = candidate(1)\n    import math\n"
        "    assert math.isclose(result, 3.5)\n",
        "assertion",
        "",
    ),
    (
        "assertion_error_replaced",
        "import builtins\n"
        "class Quiet(Exception):\n    pass\n"
        "def f(x):\n    builtins.AssertionError = Quiet\n    return 0\n",
        "def check(candidate):\n    result = candidate(1)\n"
        "    if result != 42:\n        raise AssertionError('wrong')\n",
        "assertion",
        "wrong",
    ),
    (
        "system_exit_0_before_the_asserts",
        "def f(x):\n    raise SystemExit(0)\n",
        "def check(candidate):\n    try:\n        result = candidate(1)\n"
        "    except Exception:\n        return\n    assert result == 42\n",
        "exit",
        "SystemExit",
    ),
    (
        # Finds the old harness's step record (its nonce, fd and step index are in the frames
        # above) and writes a passing one: the record the harness trusted most.
        "write_the_step_record_and_exit",
        "import os, sys\n"
        "def f(x):\n"
        "    frame = sys._getframe()\n"
        "    while frame is not None and 'writer' not in frame.f_locals:\n"
        "        frame = frame.f_back\n"
        "    if frame is not None:\n"
        "        local = frame.f_locals\n"
        "        fields = (local['nonce'], str(local['index']), 'passed', '', 'tests', '')\n"
        "        os.write(local['writer'], ('\\0'.join(fields) + '\\n').encode())\n"
        "        os._exit(0)\n"
        "    for fd in range(3, 64):\n"
        "        try:\n"
        "            os.write(fd, b'passed\\0\\0tests\\0\\n')\n"
        "        except OSError:\n"
        "            pass\n"
        "    os._exit(0)\n",
        ANSWER_42,
        "crash",
        "the candidate's process",
    ),
]


@pytest.mark.parametrize(
    ("name", "code", "tests", "error_class", "says"),
    FORGERIES,
    ids=[case[0] for case in FORGERIES],
)
def test_forged_passes_fail(name, code, tests, error_class, says):
    score = verifier().score(code, prompt(tests))
    assert not score.passed and score.status == "scored", name
    assert score.details["error_class"] == error_class, score.details
    assert says in score.details["tests"][0]["message"], score.details


def test_the_candidate_cannot_reach_the_tests_process():
    # The tests' process decides the step: if the candidate could open its report pipe through
    # /proc, write its memory or attach to it, it could write a passing verdict. All refused:
    # every process of a step is non-dumpable and the candidate has no capabilities.
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def f():\n"
        "    reached = []\n"
        "    for pid in [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
        "        if pid == os.getpid():\n"
        "            continue\n"
        "        try:\n"
        "            for fd in os.listdir(f'/proc/{pid}/fd'):\n"
        "                with open(f'/proc/{pid}/fd/{fd}', 'wb') as out:\n"
        "                    out.write(b'passed\\0\\0tests\\0\\n')\n"
        "                reached.append(f'fd {pid}/{fd}')\n"
        "        except OSError:\n"
        "            pass\n"
        "        try:\n"
        "            open(f'/proc/{pid}/mem', 'r+b').close()\n"
        "            reached.append(f'mem {pid}')\n"
        "        except OSError:\n"
        "            pass\n"
        "        if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH\n"
        "            reached.append(f'ptrace {pid}')\n"
        "        pidfd = libc.syscall(434, pid, 0)  # pidfd_open\n"
        "        if pidfd >= 0:\n"
        "            for fd in range(3, 16):\n"
        "                if libc.syscall(438, pidfd, fd, 0) >= 0:  # pidfd_getfd\n"
        "                    reached.append(f'pidfd_getfd {pid}/{fd}')\n"
        "    print('reached:', reached)\n"
        "    return 0\n"
    )
    score = run(code, expected=42)
    assert not score.passed and score.details["error_class"] == "assertion", score.details
    assert "reached: []" in score.details["output"]


def test_comparing_the_candidates_objects_is_refused():
    # Objects the tests make with the candidate's classes stay in its process: their methods
    # answer with plain data, but == (or truth, or text) would be the object judging itself.
    tests = (
        "def test_compare():\n    box = Box(42)\n    assert box.get() == 42\n    assert box == 42\n"
    )
    code = (
        "class Box:\n    def __init__(self, value):\n        self.value = value\n"
        "    def get(self):\n        return self.value\n"
        "    def __eq__(self, other):\n        return True\n"
    )
    score = verifier().score(code, prompt(tests, None))
    assert not score.passed and score.details["error_class"] == "forged_value"
    assert "applied == to a Box object" in score.details["tests"][0]["message"]


def test_missing_bubblewrap_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(supervisor, "TOOL_PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable, match=r"bwrap.*apt-get install -y bubblewrap"):
        run("def f():\n    return True\n")


def test_sandbox_runs_as_an_unprivileged_uid_without_capabilities():
    code = (
        "import os\n"
        "def f():\n"
        "    status = open('/proc/self/status').read()\n"
        "    caps = [l.split()[1] for l in status.splitlines() if l.startswith('CapEff')]\n"
        "    print(os.getuid(), caps, os.getpid())\n"
        "    return os.getuid() != 0 and caps == ['0000000000000000'] and os.getpid() < 100\n"
    )
    score = run(code)
    assert score.passed, score.details
    uid = int(score.details["output"].split()[0])
    assert (
        os.geteuid() != 0 or supervisor.UID_BASE <= uid < supervisor.UID_BASE + supervisor.UID_SPAN
    )


def test_harness_refuses_to_run_outside_the_sandbox():
    # Outside a pid namespace (and as root) the harness's kill(-1) after each step would
    # SIGKILL the host's processes. The payload is empty, so even a harness without the guard
    # would stop at reading it, before any step.
    python = SandboxConfig().python
    done = subprocess.run(
        [python, "-I", "-S", "-c", bootstrap.BOOTSTRAP],
        input=bootstrap.harness_code(python),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert b"refusing to run outside the sandbox" in done.stderr
