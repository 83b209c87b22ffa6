"""Whether a run's GPU reservations can be placed on a cluster, decided before it starts.

Runs in: anywhere (pure); ``workers/driver/placement.check_cluster`` reads the cluster's
nodes from Ray and calls :func:`placement_errors`. Ray schedules by reservations, and a
reservation nobody can grant waits forever: a run whose generators hold every GPU for the
whole run (``gpu_sharing: dedicated``) while its trainer asks for one more would hang at
its first training stage. So the run is refused before anything is registered, with the
numbers and the fields to change.

The model: each node is a list of GPUs with a free share of 1.0. A reservation below one
GPU takes a share of one GPU (Ray packs fractional GPU requests); a larger one takes that
many whole free GPUs of one node. Under ``dedicated`` the generators of every peer, every
peer's training workers (peers train at once) and one GPU scorer task (scorers run while
the generators hold their GPUs) must all fit at the same time; under ``colocate`` the
generators and the trainer share halves of one GPU, which any node with a GPU holds (a
model scorer then runs in the trainer's half).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dataflywheel.spec import RunSpec


class PlacementError(ValueError):
    """The run's GPU reservations cannot all be granted on this cluster."""


@dataclass(frozen=True)
class Reservation:
    """``count`` workers of one kind, each asking for ``gpus`` GPUs."""

    what: str
    count: int
    gpus: float


def reservations(spec: RunSpec) -> list[Reservation]:
    """What the run holds at the same time under ``dedicated`` GPUs."""
    res, t = spec.resources, spec.training
    gen = res.generator_gpus * spec.generation.engine.tensor_parallel_size
    out = [
        Reservation("generator", t.peers * res.generators, gen),
        Reservation("training worker", t.peers * res.train_workers, res.train_gpus_per_worker),
    ]
    if spec.scorer_gpus:
        out.append(Reservation("scorer", 1, spec.scorer_gpus))
    return [r for r in out if r.gpus > 0 and r.count > 0]


def fits(nodes: Sequence[float], wanted: Sequence[Reservation]) -> bool:
    """First-fit, largest first, of every reservation onto ``nodes`` (GPUs per node)."""
    free = [[1.0] * int(n) for n in nodes]
    asks = sorted((r.gpus for r in wanted for _ in range(r.count)), reverse=True)
    return all(_take(free, ask) for ask in asks)


def _take(free: list[list[float]], ask: float) -> bool:
    eps = 1e-9
    if ask <= 1:
        for node in free:
            for i, share in enumerate(node):
                if share + eps >= ask:
                    node[i] = share - ask
                    return True
        return False
    whole = math.ceil(ask - eps)
    for node in free:
        idle = [i for i, share in enumerate(node) if share >= 1 - eps]
        if len(idle) >= whole:
            for i in idle[:whole]:
                node[i] = 0.0
            return True
    return False


def placement_errors(spec: RunSpec, nodes: Sequence[float]) -> list[str]:
    """Why the run's GPU reservations cannot be placed on ``nodes`` (GPUs per live
    node); empty when they can or the run reserves no GPU."""
    if not spec.uses_gpus:
        return []
    total = sum(int(n) for n in nodes)
    if spec.resources.gpu_sharing == "colocate":
        if spec.scorer_gpus > 0.5:
            return [
                "verification.verifiers: under gpu_sharing colocate a model scorer shares the "
                "trainer's half of a GPU: set its num_gpus to 0.5 or less (got "
                f"{spec.scorer_gpus:g})"
            ]
        if total >= 1:
            return []
        return [
            "resources.gpu_sharing: colocate needs a node with a GPU; the cluster has none "
            "(start Ray with --num-gpus, or set generator_gpus and train_gpus_per_worker to 0 "
            "and gpu_sharing dedicated to run on CPU)"
        ]
    wanted = reservations(spec)
    if fits(nodes, wanted):
        return []
    need = " + ".join(f"{r.count} {r.what}(s) × {r.gpus:g} GPU" for r in wanted)
    shape = ", ".join(f"{int(n)}" for n in nodes) or "no nodes"
    return [
        f"resources: under gpu_sharing dedicated the run holds {need} at once, which the "
        f"cluster's GPUs (per node: {shape}) cannot place; set resources.gpu_sharing to "
        "colocate (generators release their GPUs for training), lower training.peers, "
        "resources.generators, generator_gpus, generation.engine.tensor_parallel_size, "
        "train_workers or train_gpus_per_worker, or add GPUs"
    ]
