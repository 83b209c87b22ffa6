"""The ``flywheel_round`` flow: one generate → verify → select → train → evaluate → promote cycle.

Runs in: the flow process (a subflow of ``flywheel_run``). Composition only: every stage is a
Prefect task that passes ids, and every task is idempotent, so re-running a round (a retry,
``flywheel resume``) redoes only what is missing. Round 0, when the spec has a warm-up, trains
on labelled references instead of generating. Each stage is timed (the manifest's
``stage_seconds``) and, with ``FLYWHEEL_OPENLINEAGE_URL`` set, reported as an OpenLineage run
of its own job (``tasks/lineage.py``, docs/openlineage.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow

from dataflywheel.rounds.plan import WARMUP_INDEX
from tasks.evaluate import evaluate_checkpoint
from tasks.generate import generate_samples
from tasks.lineage import RoundEvents
from tasks.promote import promote_checkpoint
from tasks.rounds import current_checkpoint, finish_round, start_round
from tasks.select import select_dataset
from tasks.train import train_checkpoint
from tasks.verify import gpu_tagged
from tasks.verify import score_samples as score_samples_task


def each(task: Any, calls: list[tuple[Any, ...]], together: bool = True) -> list[Any]:
    """Run one task per argument tuple, concurrently when there are several (peers) and
    ``together``, else one after another."""
    if len(calls) == 1 or not together:
        return [task(*args) for args in calls]
    futures = [task.submit(*args) for args in calls]
    return [future.result() for future in futures]


@flow(name="flywheel_round", flow_run_name="run {run_id} round {index}", persist_result=False)
def flywheel_round(
    run_id: int,
    index: int,
    evaluate_base: bool = False,
    peers: int = 1,
    share_gpus: bool = False,
    gpu_scoring: bool = False,
) -> int:
    """Run round ``index`` of run ``run_id`` (with ``peers`` models voting); returns the
    round id. With ``share_gpus`` (``resources.gpu_sharing: colocate``) the peers train one
    after another: they would share the GPUs. With ``gpu_scoring`` (a model scorer reserves
    GPUs) scoring is tagged ``gpu`` like generation and training, so the deployment's GPU
    slot limit counts it."""
    score_samples = gpu_tagged(score_samples_task) if gpu_scoring else score_samples_task
    seconds: dict[str, float] = {}
    round_id = start_round(run_id, index)
    events = RoundEvents(round_id)  # OpenLineage; sends nothing unless configured

    @contextmanager
    def stage(name: str, job: str | None = None) -> Iterator[None]:
        """Time stage ``name`` and report it as the OpenLineage job ``job`` (or ``name``)."""
        with events.stage(job or name):
            start = time.perf_counter()
            yield
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

    with events.round():
        if evaluate_base:  # the base model's score, once, so round 1 has a baseline to beat
            base = current_checkpoint(run_id, 0)
            with stage("evaluate", "evaluate_baseline"):
                generate_samples(round_id, "baseline", base)
                score_samples(round_id, "baseline")
                evaluate_checkpoint(round_id, base, "baseline")
        if index != WARMUP_INDEX:
            generators = [current_checkpoint(run_id, index, peer) for peer in range(peers)]
            with stage("generate"):
                each(
                    generate_samples, [(round_id, "train", g, p) for p, g in enumerate(generators)]
                )
            with stage("verify"):
                score_samples(round_id, "train")
        with stage("select"):
            dataset_id = select_dataset(round_id)
        # Peers learn the same data side by side; only the run's model (peer 0) is gated.
        calls = [(round_id, dataset_id, p) for p in range(peers)]
        with stage("train"):
            checkpoint_id = each(train_checkpoint, calls, not share_gpus)[0]
        if checkpoint_id is not None:
            with stage("evaluate"):
                generate_samples(round_id, "eval", checkpoint_id)
                score_samples(round_id, "eval")
                evaluate_checkpoint(round_id, checkpoint_id, "eval")
        with stage("promote"):
            promote_checkpoint(round_id)
        finish_round(round_id, seconds)
    return round_id
