"""One GPU worker's memory estimate: its lines, its budget, its verdict; and how the plan
writes sizes.

Runs in: anywhere (pure). ``generation_memory`` and ``training_memory`` build a
:class:`WorkerPlan` each; ``memory_plan`` gathers them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

GIB = 1024**3
# The CUDA context, cuBLAS/NCCL workspaces and allocator fragmentation of one process: an
# allowance (a bare CUDA context alone takes 0.3-0.5 GiB; the rest varies by library).
CUDA_OVERHEAD = int(1.5 * GIB)


@dataclass(frozen=True)
class Line:
    """One part of a worker's memory: ``key`` is stable (for code), ``component`` is read."""

    key: str
    component: str
    bytes: int


@dataclass(frozen=True)
class WorkerPlan:
    """One GPU worker kind's memory on one GPU, its budget there and the verdict."""

    kind: Literal["generation", "training"]
    lines: tuple[Line, ...]
    budget: int
    budget_source: str
    refusals: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    full_sequences: int | None = None

    @property
    def total(self) -> int:
        return sum(line.bytes for line in self.lines)

    @property
    def fits(self) -> bool:
        return not self.refusals

    def part(self, *keys: str) -> int:
        """The bytes of the lines with these keys."""
        return sum(line.bytes for line in self.lines if line.key in keys)


def format_bytes(n: float) -> str:
    """``1.5 GiB``, ``12.0 MiB``, ``4 KiB``: the unit that keeps the number readable."""
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    if n >= 1024**2:
        return f"{n / 1024**2:.1f} MiB"
    return f"{math.ceil(n / 1024)} KiB"


def format_count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def either(options: list[str]) -> str:
    return ", ".join(options) + ", or a larger GPU (resources.gpu_memory_gib)"
