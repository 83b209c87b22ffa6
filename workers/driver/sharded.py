"""Sharded submission: one Ray call per shard, a bounded number in flight.

Runs in: the flow process, as the Ray driver. The verification stage (``score_samples``)
and a rescore (``rescore_samples``) send their shards through :func:`submit_sharded`:
shards go out in order, at most ``max_in_flight`` at a time, so the cluster stays busy while
the driver holds only that many shards' results; one ``ray.wait`` watches every call in
flight, and each finished shard's result goes to the caller's ``finish`` on the driver (where
it commits that shard's rows), never a ``ray.get`` of pending calls in a loop. The generator
pool (``generator_pool``) does the same per actor, with health checks on top.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def submit_sharded(
    todo: Sequence[int],
    submit: Callable[[int], Any],
    finish: Callable[[int, Any], None],
    max_in_flight: int,
) -> None:
    """For every shard index in ``todo``, in order: ``submit(index)`` makes its Ray call and
    returns the ``ObjectRef``; ``finish(index, result)`` runs once that call returned, in the
    order calls finish. A call that raised raises here (after Ray's own retries)."""
    import ray

    if max_in_flight < 1:
        raise ValueError(f"max_in_flight: must be ≥ 1 (got {max_in_flight})")
    queue = list(todo)
    in_flight: dict[Any, int] = {}  # call -> shard index
    while queue or in_flight:
        while queue and len(in_flight) < max_in_flight:
            index = queue.pop(0)
            in_flight[submit(index)] = index
        done, _ = ray.wait(list(in_flight), num_returns=1)
        index = in_flight.pop(done[0])
        finish(index, ray.get(done[0]))  # finished: does not block
