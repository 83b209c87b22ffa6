"""How the harness gets into the sandbox: compiled ahead, sent on stdin, run by a bootstrap.

Runs in: any worker process (the supervisor's side). Compiling ``harness.py`` from source in
every sandbox cost ~3.5 ms a sample, so it is compiled once per process by the sandbox's own
interpreter (its bytecode format; again when that interpreter's file changes), in a plain
subprocess that only compiles the trusted source and executes nothing. The sandbox's
interpreter is started with ``-c BOOTSTRAP``, which reads the length-prefixed code object from
stdin and runs it; the harness then reads its payload from the rest of stdin.
"""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

HARNESS_PATH = Path(__file__).with_name("harness.py")
# Runs inside the sandbox (``python3 -I -S -c BOOTSTRAP``): standard library built-ins only.
BOOTSTRAP = """\
import marshal, posix
def read(n):
    data = b""
    while len(data) < n:
        chunk = posix.read(0, n - len(data))
        if not chunk:
            raise SystemExit("harness: stdin ended early")
        data += chunk
    return data
exec(marshal.loads(read(int.from_bytes(read(8), "big"))))
"""
# Runs outside the sandbox, on the harness's source: compile only, nothing is executed.
COMPILE = (
    "import marshal, sys; sys.stdout.buffer.write(marshal.dumps(compile("
    "sys.stdin.buffer.read(), 'harness.py', 'exec', dont_inherit=True)))"
)


class HarnessCompileError(RuntimeError):
    """The sandbox's interpreter could not compile the harness (a broken interpreter)."""


@cache
def _compiled(python: str, identity: tuple[int, int, int]) -> bytes:
    done = subprocess.run(
        [python, "-I", "-S", "-c", COMPILE],
        input=HARNESS_PATH.read_bytes(),
        capture_output=True,
        env={},
        timeout=60,
        check=False,
    )
    if done.returncode != 0 or not done.stdout:
        raise HarnessCompileError(
            f"the sandbox interpreter {python!r} cannot compile the harness: "
            f"{done.stderr.decode(errors='replace').strip()[-800:] or 'no message'}"
        )
    return done.stdout


def harness_code(python: str) -> bytes:
    """The harness as a marshalled code object of ``python``'s own bytecode format, with its
    8-byte length prefix: what the sandbox reads first on stdin (see ``BOOTSTRAP``)."""
    info = os.stat(python)  # an upgraded interpreter gets a fresh compile
    code = _compiled(python, (info.st_ino, info.st_size, info.st_mtime_ns))
    return len(code).to_bytes(8, "big") + code
