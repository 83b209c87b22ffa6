"""Placement: what every kind of worker reserves, and the run's actors.

Runs in: the flow process (as the Ray driver; connecting to Ray is ``ray_session``'s). This is
the one module that decides where work runs: the Ray resources of generator actors,
verification tasks and Ray Train workers, all read from the run spec's ``resources`` section
(:func:`generator_resources`, :func:`verify_options`, :func:`train_scaling`); generator
actors are named per run, peer and pool slot, so every task of the run (and a resumed flow)
reuses the same loaded model instead of starting a new one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from dataflywheel.config import Settings
from dataflywheel.spec import ResourcesSpec, RunSpec
from dataflywheel.verifiers import scorer_resources
from workers.driver.ray_session import NAMESPACE

# A named actor that is not detached is still reference counted: once the last handle in
# this process goes away (when the generate task returns) Ray kills it, and the next stage
# paid a new vLLM engine (~45-60 s) instead of an in-place weight reload. The driver keeps
# one handle per actor here until release_generators (the actors still die with the driver).
_HANDLES: dict[str, Any] = {}


def generator_cpus(actors: int) -> float:
    """The CPUs each of a run's ``actors`` generator actors reserves by default: none.

    A generator actor lives for the whole run and keeps its reservation while it idles, and
    verification tasks and trainers (one CPU each) run while the generators wait: generation
    and training take turns. Any CPU the idle generators held would be missing from them: with
    a shared reservation of one CPU, a 2-core machine trained two peers one after another,
    each on one core, while the other core idled. Ray still runs a zero-CPU actor's torch on
    one thread (``OMP_NUM_THREADS=1``, as for a fraction of a CPU), so samples do not change.
    A GPU generator's real limit is its ``num_gpus``, and a cluster sets
    ``resources.generator_cpus`` to give each actor cores of its own."""
    if actors < 1:
        raise ValueError(f"actors: must be ≥ 1 (got {actors})")
    return 0.0


def generator_slots(spec: RunSpec) -> int:
    """How many generator actors the run has: ``resources.generators`` per peer model."""
    return spec.training.peers * spec.resources.generators


def generator_index(spec: RunSpec, peer: int, slot: int) -> int:
    """The run-wide number of peer ``peer``'s generator in pool slot ``slot``."""
    if not 0 <= slot < spec.resources.generators:
        raise ValueError(f"slot: 0..{spec.resources.generators - 1} (got {slot})")
    return peer * spec.resources.generators + slot


# Under gpu_sharing colocate a GPU is split in two halves: the run's generators share one
# (each takes its part of it), the trainer takes the other. Ray then places them on the same
# GPU, and neither waits for the other's reservation; who may use the memory when is the
# GPU lease's business (the generators release it before training: ``gpu_lease``).
COLOCATE_GENERATORS_SHARE = 0.5
COLOCATE_TRAINER_SHARE = 0.5


def colocated(spec: RunSpec | ResourcesSpec) -> bool:
    res = spec.resources if isinstance(spec, RunSpec) else spec
    return res.gpu_sharing == "colocate"


def generator_gpus(spec: RunSpec) -> float:
    """GPUs each generator actor reserves: ``resources.generator_gpus``, times the engine's
    tensor-parallel size; under colocate, its part of the generators' half of one GPU."""
    res = spec.resources
    if colocated(spec):
        return round(COLOCATE_GENERATORS_SHARE / generator_slots(spec), 6)
    return res.generator_gpus * spec.generation.engine.tensor_parallel_size


def trainer_gpus(resources: ResourcesSpec) -> float:
    """GPUs each training worker reserves (the trainer's half under colocate)."""
    if colocated(resources):
        return COLOCATE_TRAINER_SHARE
    return resources.train_gpus_per_worker


def generator_resources(spec: RunSpec) -> dict[str, float]:
    """``num_cpus`` / ``num_gpus`` of each of the run's generator actors."""
    res = spec.resources
    cpus = res.generator_cpus or generator_cpus(generator_slots(spec))
    return {"num_cpus": cpus, "num_gpus": generator_gpus(spec)}


def verify_options(spec: RunSpec) -> dict[str, float]:
    """Ray options of one verification task (a shard of samples)."""
    return {"num_cpus": spec.resources.verify_cpus, **scorer_options(spec.verification.verifiers)}


def scorer_options(configs: Iterable[Any]) -> dict[str, float]:
    """Ray options for the GPUs and host memory a scoring task reserves for the verifiers
    ``configs`` (``dataflywheel.verifiers.scorer_resources``)."""
    gpus, memory = scorer_resources(configs)
    options: dict[str, float] = {}
    if gpus:
        options["num_gpus"] = gpus
    if memory:
        options["memory"] = int(memory * 2**30)
    return options


def train_scaling(resources: ResourcesSpec) -> dict[str, Any]:
    """Keyword arguments of Ray Train's ``ScalingConfig`` for one training run (plain data,
    so the flow process needs no ``ray.train`` import)."""
    per_worker = {"CPU": resources.train_cpus_per_worker}
    gpus = trainer_gpus(resources)
    if gpus:
        per_worker["GPU"] = gpus
    return {
        "num_workers": resources.train_workers,
        "use_gpu": gpus > 0,
        "resources_per_worker": per_worker,
        "placement_strategy": resources.train_placement,
    }


def distributed_training(resources: ResourcesSpec) -> bool:
    """Whether training goes through Ray Train: only with more than one worker. One worker
    needs no process group, and a plain Ray task keeps its warm process (torch, TRL
    imported) from round to round where Ray Train would start a controller and new worker
    processes for every checkpoint (``workers/trainer.py``)."""
    return resources.train_workers > 1


def trains_in_generator(spec: RunSpec) -> bool:
    """Whether the run's peers build their base model and train in their first generator
    actor (``GeneratorWorker.train``, a hybrid engine) instead of in a training task: on a
    run that declares no GPU, with the transformers backend and one training worker, unless
    ``resources.train_in_generator`` is false.

    Every process that holds a model pays ~10 CPU-seconds of torch and transformers imports
    before its first step (docs/benchmarks.md); the generator actor has paid them already,
    so a peer's whole round (base model, generation, training) runs in one warm process. The
    result is the same: the same ``train_here`` on the same inputs and the same thread count
    (:func:`train_threads`). Not where GPUs are declared (their reservations and leases are
    per process, and vLLM's sleep mode is the way to share one), not with vLLM (its CPU engine
    pins its threads to cores), and not with Ray Train (``train_workers`` > 1). The actor
    reserves no CPU, so the training it runs holds no Ray reservation either: peers train
    side by side, each on its :func:`train_threads`."""
    return (
        spec.resources.train_in_generator
        and spec.generation.backend == "transformers"
        and not spec.uses_gpus
        and not distributed_training(spec.resources)
    )


def train_threads(resources: ResourcesSpec) -> int:
    """torch threads of a one-worker training run: the CPUs the training task reserves, as
    Ray's ``OMP_NUM_THREADS`` gives that task (at least one). ``training.num_threads``, when
    set, applies inside either way."""
    return max(1, int(resources.train_cpus_per_worker))


def trainer_options(resources: ResourcesSpec) -> dict[str, Any]:
    """Ray options of the training call: the one-worker task reserves a worker's resources;
    the task that drives a Ray Train run reserves none (its workers reserve what
    :func:`train_scaling` says). ``RAY_ADDRESS`` names this cluster for the actors Ray Train
    starts from there: its placement-group cleaner reads Ray's state API at address "auto",
    which fails on a machine running more than one Ray (a test suite, a laptop with two
    clusters)."""
    if not distributed_training(resources):
        return {
            "num_cpus": resources.train_cpus_per_worker,
            "num_gpus": trainer_gpus(resources),
        }
    import ray

    address = ray.get_runtime_context().gcs_address
    return {"num_cpus": 0, "runtime_env": {"env_vars": {"RAY_ADDRESS": address}}}


def check_cluster(spec: RunSpec) -> None:
    """Refuse (``PlacementError``) a run whose GPU reservations the connected cluster's
    live nodes cannot all grant; see ``dataflywheel/gpu/placement_fit.py``."""
    import ray

    from dataflywheel.gpu.placement_fit import PlacementError, placement_errors

    nodes = [n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    errors = placement_errors(spec, nodes)
    if errors:
        raise PlacementError("; ".join(errors))


def generator_name(run_id: int, index: int) -> str:
    """The Ray name of the run's generator actor number ``index``."""
    return f"generator-run{run_id}-{index}"


def generator(
    run_id: int,
    backend: str,
    *,
    backend_options: dict[str, Any] | None = None,
    index: int = 0,
    num_cpus: float = 1,
    num_gpus: float = 0,
):
    """The run's generator actor number ``index``, created on first use."""
    import ray

    from workers.generator import GeneratorWorker

    settings = _settings_for_workers()
    name = generator_name(run_id, index)
    # Keyed by the Ray job too: a handle from an earlier ray.init in this process is dead.
    key = f"{ray.get_runtime_context().get_job_id()}/{name}"
    if key in _HANDLES:  # the creating handle: a borrowed one does not keep the actor alive
        return _HANDLES[key]
    _HANDLES[key] = GeneratorWorker.options(
        name=name,
        namespace=NAMESPACE,
        get_if_exists=True,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        max_restarts=2,
        max_task_retries=0,
    ).remote(
        backend,
        settings["store_uri"],
        settings["store_options"],
        settings["cache_dir"],
        backend_options,
    )
    return _HANDLES[key]


def replace_generator(
    run_id: int,
    backend: str,
    *,
    backend_options: dict[str, Any] | None = None,
    index: int = 0,
    num_cpus: float = 1,
    num_gpus: float = 0,
    timeout_s: float = 120.0,
):
    """Kill the run's generator actor number ``index`` (hung: see ``health``) and return a
    fresh one. A fresh actor rather than Ray's in-place restart: restarts are budgeted per
    actor (``max_restarts``), and a new one may land on a healthier node."""
    import time

    import ray

    name = generator_name(run_id, index)
    key = f"{ray.get_runtime_context().get_job_id()}/{name}"
    old = _HANDLES.pop(key, None)
    with contextlib.suppress(ValueError):  # not registered (any more): kill the handle we hold
        old = ray.get_actor(name, namespace=NAMESPACE)
    if old is not None:
        ray.kill(old, no_restart=True)
    deadline = time.monotonic() + timeout_s
    while True:  # ray.kill is asynchronous: the name is free once the actor is dead
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the hung actor {name} was not gone {timeout_s:g} s after kill")
        time.sleep(0.2)
    return generator(
        run_id,
        backend,
        backend_options=backend_options,
        index=index,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )


def release_generators(run_id: int, count: int = 8) -> None:
    """Kill the run's generator actors numbered below ``count`` (they hold models and engine
    processes); ``count`` is :func:`generator_slots` of the run's spec."""
    import ray

    for index in range(count):
        try:
            actor = ray.get_actor(generator_name(run_id, index), namespace=NAMESPACE)
        except ValueError:
            continue
        ray.kill(actor)
        job = ray.get_runtime_context().get_job_id()
        _HANDLES.pop(f"{job}/{generator_name(run_id, index)}", None)


def _settings_for_workers() -> dict[str, Any]:
    settings = Settings()
    secret = settings.s3_secret_access_key
    return {
        "store_uri": settings.resolved_store_uri,
        "store_options": {
            "endpoint_url": settings.s3_endpoint_url,
            "region": settings.s3_region,
            "access_key_id": settings.s3_access_key_id,
            "secret_access_key": secret.get_secret_value() if secret else None,
        },
        "cache_dir": str(settings.resolved_data_dir / "model-cache"),
    }


def store_args() -> tuple[str, dict[str, Any], str]:
    """(store URI, store options, model cache dir) for remote functions."""
    s = _settings_for_workers()
    return s["store_uri"], s["store_options"], s["cache_dir"]
