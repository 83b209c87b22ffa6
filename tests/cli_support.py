"""The ``flywheel`` command as a user runs it, for tests: ``python -m dataflywheel.cli`` in a
subprocess of this interpreter, its output captured as text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def flywheel(
    *args: str,
    env: dict[str, str],
    timeout: float = 120,
    stdin: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dataflywheel.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
