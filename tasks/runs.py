"""Run bookkeeping: register a run from its spec, put its base model in the store, close it.

Runs in: Prefect task (flow process). Building or converting a model needs torch, so it runs
as a Ray task (``workers.bootstrap``); a local model folder is uploaded from here (plain file
I/O). The base checkpoint row gets its object key only after the upload finished.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from dataflywheel.db import checkpoints, queries
from dataflywheel.rounds import plan
from dataflywheel.spec import RunSpec, spec_hash
from dataflywheel.store import normalize_key
from tasks import context


@task(
    name="register_run",
    retries=2,
    retry_delay_seconds=5,
    persist_result=False,
    cache_policy=NO_CACHE,
)
def register_run(spec: RunSpec, idempotency_key: str | None = None) -> int:
    with context.session() as session:
        run_id = queries.create_run(
            session,
            name=spec.name,
            spec=spec.model_dump(mode="json"),
            spec_hash=spec_hash(spec),
            idempotency_key=idempotency_key,
        )
        queries.set_run_status(session, run_id, "running")
        return run_id


@task(
    name="prepare_base_model",
    retries=1,
    retry_delay_seconds=5,
    persist_result=False,
    cache_policy=NO_CACHE,
)
def prepare_base_model(run_id: int) -> int:
    """The run's base checkpoint (and one per peer), with weights in the store; returns the
    run's own base checkpoint id."""
    with context.session() as session:
        spec = queries.run_spec(session, run_id)
        # A run created elsewhere (the API, `flywheel resume`) starts running here.
        queries.set_run_status(session, run_id, "running")
    ids = [_prepare_base(run_id, spec, peer) for peer in range(spec.training.peers)]
    return ids[0]


def _prepare_base(run_id: int, spec: RunSpec, peer: int) -> int:
    with context.session() as session:
        checkpoint_id = checkpoints.ensure_checkpoint(
            session,
            run_id=run_id,
            round_id=None,
            parent_id=None,
            status="base",
            source_uri=spec.model.source,
            peer=peer,
        )
        if checkpoints.get_checkpoint(session, checkpoint_id).object_key is not None:
            return checkpoint_id
    key, digest = _materialise(spec, run_id, peer)
    with context.session() as session:
        checkpoints.set_checkpoint_weights(session, checkpoint_id, object_key=key, digest=digest)
    return checkpoint_id


def _materialise(spec: RunSpec, run_id: int, peer: int = 0) -> tuple[str, str]:
    """The base weights' store key and digest; a built-in tiny model is initialised from a
    seed of its own per peer (other models are the same weights for every peer)."""
    model = spec.model
    store = context.store()
    if model.kind == "path":
        ref = store.put_tree(Path(model.source))
        return ref.key, ref.digest
    if model.kind == "uri":
        if not model.source.startswith("store:"):
            raise ValueError(
                f"model.source {model.source!r}: only store:sha256/... URIs of this run's object "
                "store are supported; upload the folder with `flywheel store put DIR` first"
            )
        key = normalize_key(model.source.removeprefix("store:"))
        if not store.exists(key):
            raise ValueError(f"model.source {model.source!r}: no such object in {store.uri}")
        return key, key.rsplit("/", 1)[-1]
    import ray

    from workers import bootstrap
    from workers.driver import generator_pool, placement

    context.connect_ray()
    store_uri, store_options, _ = placement.store_args()
    if model.kind == "smollm2":
        return tuple(ray.get(bootstrap.prepare_smollm2.remote(store_uri, store_options)))
    from dataflywheel.training.tiny import TinyModelConfig

    assert model.tiny is not None
    tiny, seed = TinyModelConfig(**model.tiny.model_dump()), plan.init_seed(spec, peer)
    if placement.trains_in_generator(spec):  # built where it will be trained: the peer's actor
        threads = placement.train_threads(spec.resources)
        return tuple(
            generator_pool.on_peer_actor(
                run_id,
                spec,
                peer,
                context.settings(),
                lambda actor: actor.build_base.remote(
                    store_uri, store_options, tiny, seed, threads
                ),
            )
        )
    return tuple(ray.get(bootstrap.build_base_model.remote(store_uri, store_options, tiny, seed)))


@task(name="finish_run", persist_result=False, cache_policy=NO_CACHE)
def finish_run(run_id: int, status: str, error: str | None = None) -> None:
    """Record the run's outcome and free its generator actors (they hold loaded models). A
    run cancelled meanwhile (API, Prefect UI) stays cancelled: its killed process is not a
    failure."""
    with context.session() as session:
        run = queries.get_run(session, run_id)
        if run.status != "cancelled":
            queries.set_run_status(session, run_id, status, error)
        spec = RunSpec.model_validate(run.spec)
    import ray

    if ray.is_initialized():
        from workers.driver import placement

        placement.release_generators(run_id, placement.generator_slots(spec))
