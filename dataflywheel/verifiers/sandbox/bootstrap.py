"""How the harness gets into the sandbox: compiled ahead, sent on stdin, run by a bootstrap.

Runs in: any worker process (the supervisor's side). Compiling ``harness.py`` from source in
every sandbox cost ~3.5 ms a sample, so it is compiled once per process by the sandbox's own
interpreter (its bytecode format; again when that interpreter's file changes), in a plain
subprocess that only compiles the trusted source and executes nothing. The sandbox's
interpreter is started with ``-c BOOTSTRAP``, which reads the length-prefixed code objects
from stdin: first the modules the harness imports (``plain.py``, ``bridge.py``), registered
under their own dotted names with empty parent packages, so that the same ``import`` lines
work in the sandbox and in this repository; then the harness, which it runs. The harness
reads its payload from the rest of stdin.
"""

from __future__ import annotations

import marshal
import os
import subprocess
from functools import cache
from pathlib import Path

HARNESS_PATH = Path(__file__).with_name("harness.py")
PACKAGE = "dataflywheel.verifiers.sandbox"
# What the harness imports, in import order (each file's imports come before it).
MODULES = ("plain", "bridge")
# Runs inside the sandbox (``python3 -I -S -c BOOTSTRAP``): standard library built-ins only.
BOOTSTRAP = """\
import marshal, posix, sys
def read(n):
    data = b""
    while len(data) < n:
        chunk = posix.read(0, n - len(data))
        if not chunk:
            raise SystemExit("harness: stdin ended early")
        data += chunk
    return data
*modules, harness = marshal.loads(read(int.from_bytes(read(8), "big")))
for name, code in modules:
    module = sys.modules[name] = type(sys)(name)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    if code is not None:
        exec(code, module.__dict__)
exec(harness[1])
"""
# Runs outside the sandbox, on the trusted sources: compile only, nothing is executed.
COMPILE = (
    "import marshal, sys; sys.stdout.buffer.write(marshal.dumps([(name, None if source is None "
    "else compile(source, filename, 'exec', dont_inherit=True)) for name, filename, source in "
    "marshal.loads(sys.stdin.buffer.read())]))"
)


def _sources() -> list[tuple[str, str, bytes | None]]:
    """(module name, file name, source) of the parent packages, the modules, the harness."""
    parts = PACKAGE.split(".")
    packages = [(".".join(parts[: i + 1]), "", None) for i in range(len(parts))]
    here = HARNESS_PATH.parent
    modules = [(f"{PACKAGE}.{m}", f"{m}.py", (here / f"{m}.py").read_bytes()) for m in MODULES]
    return [*packages, *modules, ("__main__", "harness.py", HARNESS_PATH.read_bytes())]


class HarnessCompileError(RuntimeError):
    """The sandbox's interpreter could not compile the harness (a broken interpreter)."""


@cache
def _compiled(python: str, identity: tuple[int, int, int]) -> bytes:
    done = subprocess.run(
        [python, "-I", "-S", "-c", COMPILE],
        input=marshal.dumps(_sources()),
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
    """The harness and its modules as marshalled code objects of ``python``'s own bytecode
    format, with an 8-byte length prefix: what the sandbox reads first on stdin (``BOOTSTRAP``)."""
    info = os.stat(python)  # an upgraded interpreter gets a fresh compile
    code = _compiled(python, (info.st_ino, info.st_size, info.st_mtime_ns))
    return len(code).to_bytes(8, "big") + code
