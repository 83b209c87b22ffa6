"""torch's intra-op thread count for one piece of work (a training run, a generate call).

Runs in: Ray workers (the trainer, the transformers generator). Imports torch only when a
count is given, so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block on ``count`` torch threads (None: leave the setting alone); the
    process gets its own count back afterwards."""
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
