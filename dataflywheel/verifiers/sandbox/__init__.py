"""The code sandbox: run untrusted candidate code against its tests, decide outside.

Runs in: any worker process (spawns sandboxed subprocesses). ``config.py`` holds the limits,
``steps.py`` cuts a test file into steps (pure), ``supervisor.py`` starts bubblewrap, bounds
and kills it and reads the verdict, ``harness.py`` is the program that runs inside (each step
in a tests' process and a candidate's process), ``bridge.py`` and ``plain.py`` are what
passes between those two (plain data only), and ``bootstrap.py`` compiles them ahead and gets
them in.
What it protects against, and what not: docs/sandbox.md.
"""

from dataflywheel.verifiers.sandbox.config import SandboxConfig
from dataflywheel.verifiers.sandbox.steps import TestsParseError, TestStep, discover_steps
from dataflywheel.verifiers.sandbox.supervisor import (
    SandboxResult,
    SandboxUnavailable,
    StepResult,
    run_sandboxed,
)

__all__ = [
    "SandboxConfig",
    "SandboxResult",
    "SandboxUnavailable",
    "StepResult",
    "TestStep",
    "TestsParseError",
    "discover_steps",
    "run_sandboxed",
]
