"""Training stage: build the round's training mix and train a candidate checkpoint on Ray.

Runs in: Prefect task (flow process, as the Ray driver). The mix is the round's own dataset
plus, when the spec asks, a replayed share of earlier rounds' data and a share of the
labelled warm-up data (drawn with the round's seed: ``dataflywheel.rounds.mix``). The mix
file goes to the store; the trainer (``workers.trainer``: a Ray Train run whose workers and
resources come from the spec's ``resources`` through ``workers.driver.placement``) fetches
the parent weights and the mix, trains, uploads the new weights, and only then does the
checkpoint row get its object key — no row ever points at a missing object. A checkpoint
that already has weights is not trained again. On a run without GPUs, with the transformers
backend and one training worker, the peer's generator actor trains instead of a task of its
own (``placement.trains_in_generator``: the same training, in a process already warm).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dataflywheel import faults
from dataflywheel.db import checkpoints, queries
from dataflywheel.db.models import Dataset
from dataflywheel.prompts import canonical_jsonl
from dataflywheel.rounds import plan
from dataflywheel.rounds.mix import training_mix
from tasks import context


def _rows(dataset: Dataset) -> list[dict[str, Any]]:
    """A dataset's rows, read from its JSONL file in the store."""
    text = context.store().get_bytes(dataset.object_key).decode()
    return [json.loads(line) for line in text.splitlines() if line]


@task(
    name="train_checkpoint",
    retries=1,
    retry_delay_seconds=5,
    tags=["gpu"],
    persist_result=False,
    cache_policy=NO_CACHE,
)
def train_checkpoint(round_id: int, dataset_id: int, peer: int = 0) -> int | None:
    """Train the round's candidate (or peer ``peer``'s, on the same mix from its own parent
    with its own seed); returns its checkpoint id (None when nothing was kept)."""
    import ray

    from workers.driver import generator_pool, gpu_lease, placement
    from workers.trainer import TrainJob, train_distributed
    from workers.trainer import train_checkpoint as train_remote

    with context.session() as session:
        rnd = queries.get_round(session, round_id)
        run_id, index = rnd.run_id, rnd.index
        spec = queries.run_spec(session, run_id)
        own = session.get(Dataset, dataset_id)
        assert own is not None
        if own.row_count == 0:
            return None  # nothing selected: the incumbent stays, the gate records a skip
        from_base = spec.training.init_from == "base" and index != plan.WARMUP_INDEX
        parent = (
            checkpoints.base_checkpoint(session, run_id, peer)
            if from_base
            else checkpoints.last_promoted(session, run_id, index, peer)
        )
        config = plan.train_config(spec, index, peer)
        prompt_format = plan.prompt_format(spec, "train")
        checkpoint_id = checkpoints.ensure_checkpoint(
            session,
            run_id=run_id,
            round_id=round_id,
            parent_id=parent.id,
            status="candidate",
            peer=peer,
            training_config={**asdict(config), "prompt_format": prompt_format.describe()},
        )
        checkpoint = checkpoints.get_checkpoint(session, checkpoint_id)
        if checkpoint.object_key is not None:
            return checkpoint_id  # trained before a crash or retry: keep it
        earlier = checkpoints.round_datasets(session, run_id, index)
        parent_key = parent.object_key
        mix, shares = training_mix(spec, index, own, earlier, _rows)
    mix_ref = context.store().put_bytes(canonical_jsonl(mix))
    context.connect_ray()
    store_uri, store_options, cache_dir = placement.store_args()
    scaling = placement.train_scaling(spec.resources)
    args = (store_uri, store_options, parent_key, mix_ref.key, config, config.method, prompt_format)
    options = placement.trainer_options(spec.resources)
    released = []
    if placement.colocated(spec):  # the trainer's GPUs are the generators': take them back
        released = gpu_lease.release_generators(run_id, placement.generator_slots(spec))
    if placement.trains_in_generator(spec):  # the peer's warm generator actor (hybrid engine)
        job, threads = TrainJob(*args), placement.train_threads(spec.resources)
        scaling = {"in_generator": True, "threads": threads}
        outcome = generator_pool.on_peer_actor(
            run_id, spec, peer, context.settings(), lambda actor: actor.train.remote(job, threads)
        )
    elif placement.distributed_training(spec.resources):
        outcome = ray.get(train_distributed.options(**options).remote(*args, scaling))
    else:
        outcome = ray.get(train_remote.options(**options).remote(*args))
    faults.pause_point(context.settings(), "train", index)
    metrics = {
        **asdict(outcome.result),
        "node": outcome.node_id,
        "worker_nodes": list(outcome.worker_nodes),
        "scaling": scaling,
        "mix_key": mix_ref.key,
    }
    metrics["losses"] = metrics["losses"][-200:]  # the curve's tail; the full log is not lineage
    with context.session() as session:
        checkpoints.set_checkpoint_weights(
            session,
            checkpoint_id,
            object_key=outcome.model_key,
            digest=outcome.digest,
            training_metrics=metrics,
        )
        checkpoints.link_training_data(session, checkpoint_id, shares)
        queries.add_compute_seconds(session, round_id, "train", outcome.result.seconds)
        if spec.uses_gpus:
            leases = [*released, *gpu_lease.trainer_leases(outcome, peer)]
            queries.add_gpu_leases(session, round_id, leases)
    return checkpoint_id
