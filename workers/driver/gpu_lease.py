"""GPU leases: who holds which GPUs when, and handing a shared GPU from generation to training.

Runs in: the flow process, as the Ray driver (the generate and train Prefect tasks). A lease
is a plain dict ``{holder, stage, node, gpus, start, end}`` (wall-clock seconds; GPU ids as
Ray granted them, which on a CPU machine with GPUs declared to Ray are the declared ids).
Tasks record them in the round's manifest (``queries.add_gpu_leases``), beside its timings.

Under ``resources.gpu_sharing: colocate`` the run's generators and its trainer reserve
fractions of the same GPU (``placement``), so Ray would let them run at once; the lease is
what keeps them apart: before training, :func:`release_generators` has every generator of
the run give its device memory back (``GeneratorWorker.release``) and waits until each one
has, and the training stage starts only then. A generator takes the GPU again at its next
load or generate call, which comes after training (evaluation, the next round).
"""

from __future__ import annotations

import time
from typing import Any

from workers.driver import placement
from workers.driver.ray_session import NAMESPACE

RELEASE_TIMEOUT_S = 600.0  # a vLLM sleep offloads the weights to host memory: seconds


def release_generators(run_id: int, slots: int) -> list[dict[str, Any]]:
    """Have each of the run's ``slots`` generator actors release its GPU memory; returns
    the leases that ended (one per actor that held the device). Actors that do not exist
    (never started, or killed) hold nothing."""
    import ray

    calls = []
    for index in range(slots):
        name = placement.generator_name(run_id, index)
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            continue
        calls.append((name, actor.release.remote()))
    leases = []
    for name, ref in calls:
        lease = ray.get(ref, timeout=RELEASE_TIMEOUT_S)
        if lease is not None:
            leases.append({"holder": name, "stage": "awake", **lease})
    return leases


def stage_leases(gens: list[Any], stage: str, start: float) -> list[dict[str, Any]]:
    """One lease per actor of a generator pool (``generator_pool.Generator``) that served
    ``stage``, from ``start`` to now."""
    import ray

    now = time.time()
    asked = [(gen, gen.actor.lease.remote(now)) for gen in gens if gen.node]
    out = []
    for gen, ref in asked:
        lease = ray.get(ref)
        if lease is not None:
            name = placement.generator_name(gen.run_id, gen.index)
            out.append(
                {**lease, "holder": name, "stage": stage, "start": max(start, lease["start"])}
            )
    return out


def trainer_leases(outcome: Any, peer: int, stage: str = "train") -> list[dict[str, Any]]:
    """The leases of a training run's workers (``workers.trainer.TrainOutcome``)."""
    return [
        {
            "holder": f"trainer peer {peer} rank {rank}",
            "stage": stage,
            "node": node,
            "gpus": list(gpus),
            "start": outcome.started_at,
            "end": outcome.ended_at,
        }
        for rank, (node, gpus) in enumerate(
            zip(outcome.worker_nodes, outcome.worker_gpus, strict=True)
        )
    ]
