"""Limits of one sandboxed verification: the typed configuration of the code sandbox.

Runs in: anywhere (pure). The supervisor (``supervisor.py``) turns these fields into
bubblewrap arguments and rlimits; ``docs/sandbox.md`` says what each one does and does not
protect against.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SandboxConfig(BaseModel):
    """Resource limits and timeouts for running untrusted code and its tests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Wall-clock limit of one whole sample (all its tests), enforced from "
        "outside the sandbox by killing it.",
    )
    test_timeout_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Wall-clock limit of one test step; a step over it is killed and scored "
        "'timeout' while the other steps still run.",
    )
    cpu_s: int = Field(
        5, ge=1, le=3600, description="CPU seconds per process (RLIMIT_CPU; SIGKILL at +1 s)."
    )
    memory_mb: int = Field(
        512, ge=64, le=65536, description="Address space per process in MiB (RLIMIT_AS)."
    )
    file_size_mb: int = Field(
        16, ge=1, le=4096, description="Largest file a process may write, MiB (RLIMIT_FSIZE)."
    )
    tmp_mb: int = Field(
        64, ge=1, le=4096, description="Size of the private, writable /tmp (a tmpfs), MiB."
    )
    open_files: int = Field(
        64, ge=16, le=4096, description="Open file descriptors (RLIMIT_NOFILE)."
    )
    processes: int = Field(
        16,
        ge=4,
        le=1024,
        description="Processes of the sandbox's user (RLIMIT_NPROC; the harness and a "
        "step's two processes take 3).",
    )
    max_output_bytes: int = Field(
        16384,
        ge=0,
        le=16 * 2**20,
        description="stdout/stderr kept per sample; the rest is read and discarded.",
    )
    allow_nan: bool = Field(
        False,
        description="Let the candidate's return values hold NaN. Off: a NaN fails the step as "
        "forged_value, since it compares unequal to everything and so passes tests written as "
        "`not abs(x - y) > tol`; turn it on for prompts whose answers may be NaN.",
    )
    python: str = Field(
        "/usr/bin/python3",
        description="Interpreter run inside the sandbox; it must live under /usr (bound "
        "read-only), e.g. Debian's python3. Candidates get its standard library only.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.test_timeout_s > self.timeout_s:
            raise ValueError(
                f"test_timeout_s: must be ≤ timeout_s ({self.test_timeout_s} > {self.timeout_s})"
            )
        if not self.python.startswith("/usr/"):
            raise ValueError(
                f"python: must be an interpreter under /usr (only /usr is visible in the "
                f"sandbox), got {self.python!r}; install Debian's python3 and use /usr/bin/python3"
            )
        return self
