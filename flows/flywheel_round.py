"""The ``flywheel_round`` flow: one generate → verify → select → train → evaluate → promote cycle.

Runs in: the flow process (a subflow of ``flywheel_run``). Composition only: every stage is a
Prefect task that passes ids, and every task is idempotent, so re-running a round (a retry,
``flywheel resume``) redoes only what is missing. Round 0, when the spec has a warm-up, trains
on labelled references instead of generating.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect import flow

from dataflywheel.rounds.plan import WARMUP_INDEX
from tasks.evaluate import evaluate_checkpoint
from tasks.generate import generate_samples
from tasks.promote import promote_checkpoint
from tasks.rounds import current_checkpoint, finish_round, start_round
from tasks.select import select_dataset
from tasks.train import train_checkpoint
from tasks.verify import score_samples


def each(task: Any, calls: list[tuple[Any, ...]]) -> list[Any]:
    """Run one task per argument tuple, concurrently when there are several (peers)."""
    if len(calls) == 1:
        return [task(*calls[0])]
    futures = [task.submit(*args) for args in calls]
    return [future.result() for future in futures]


@flow(name="flywheel_round", flow_run_name="run {run_id} round {index}", persist_result=False)
def flywheel_round(run_id: int, index: int, evaluate_base: bool = False, peers: int = 1) -> int:
    """Run round ``index`` of run ``run_id`` (with ``peers`` models voting); returns the
    round id."""
    seconds: dict[str, float] = {}

    def timed(stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args)
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start
        return result

    round_id = start_round(run_id, index)
    if evaluate_base:  # the base model's score, once, so round 1 has a baseline to beat
        base = current_checkpoint(run_id, 0)
        timed("evaluate", generate_samples, round_id, "baseline", base)
        timed("evaluate", score_samples, round_id, "baseline")
        timed("evaluate", evaluate_checkpoint, round_id, base, "baseline")
    if index != WARMUP_INDEX:
        generators = [current_checkpoint(run_id, index, peer) for peer in range(peers)]
        timed(
            "generate",
            each,
            generate_samples,
            [(round_id, "train", g, p) for p, g in enumerate(generators)],
        )
        timed("verify", score_samples, round_id, "train")
    dataset_id = timed("select", select_dataset, round_id)
    # Peers learn the same data side by side; only the run's model (peer 0) is gated.
    checkpoint_id = timed(
        "train", each, train_checkpoint, [(round_id, dataset_id, p) for p in range(peers)]
    )[0]
    if checkpoint_id is not None:
        timed("evaluate", generate_samples, round_id, "eval", checkpoint_id)
        timed("evaluate", score_samples, round_id, "eval")
        timed("evaluate", evaluate_checkpoint, round_id, checkpoint_id, "eval")
    timed("promote", promote_checkpoint, round_id)
    finish_round(round_id, seconds)
    return round_id
