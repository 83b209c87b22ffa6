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
