"""Training one checkpoint (SFT or DPO, TRL inside) on Ray, from store keys to a stored one.

Runs in: Ray. Two entry points, chosen by the placement module
(``workers.driver.placement``) from the run spec's ``resources``:

- ``train_checkpoint``: one worker, a plain Ray task (``resources.train_workers: 1``, the
  default). Ray reuses its worker process from round to round, so torch, transformers and
  TRL are imported once per run.
- ``train_distributed``: a zero-CPU Ray task that drives one Ray Train run (a
  ``TorchTrainer`` with the ``ScalingConfig`` from
  ``workers.driver.placement.train_scaling``); its workers form one torch process group
  (gloo on CPU, NCCL on GPU), so TRL's trainer runs data-parallel (DDP): each worker takes
  its share of every global batch (``DistributedSampler``) and gradients are averaged
  across workers. Ray Train starts a controller and fresh worker processes for every run
  (measured 15–80 s of start-up on 2 cores, docs/benchmarks.md), which only pays when there
  is more than one worker.

Both run :func:`train_here`, and so does the hybrid engine on a CPU run: the peer's
generator actor calls it in its own process (``GeneratorWorker.train``,
``workers.driver.placement.trains_in_generator``). Importing this module is safe in the flow
process: Ray Train's torch side, torch and TRL are imported inside the remote functions only,
which is also why the flow cannot build the ``TorchTrainer`` itself.

Inputs and outputs are object-store keys: every worker fetches the base model tree and the
JSONL dataset (rows ``{"prompt", "completion"}`` for SFT, ``{"prompt", "chosen",
"rejected"}`` for DPO) into a temporary directory of its own; rank 0 stores the trained
folder with ``put_tree`` and returns the outcome (Ray Train's ``Result.return_value``), so no
shared filesystem and no Ray Train checkpoint are needed. ``TrainConfig.batch_size`` is the
global batch: each of N workers gets ``batch_size / N`` rows per step.

Threads: Ray sets ``OMP_NUM_THREADS`` in each worker to the CPUs it reserves, which torch
uses, unless ``config.num_threads`` says otherwise (the run spec's ``training.num_threads``:
the generator idles while the trainer runs, so a CPU machine can give one trainer every core).
Replays are bit-exact on CPU float32 (see ``dataflywheel/training/sft.py``) provided the
thread count and the number of workers are the same (gloo sums two ranks' gradients in a
fixed order).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ray

from dataflywheel.generation.prompt_format import PromptFormat
from dataflywheel.store import open_store
from dataflywheel.torch_threads import torch_threads
from dataflywheel.training import TrainConfig, TrainResult, read_examples


@dataclass(frozen=True)
class TrainJob:
    """What every Ray Train worker needs: where the inputs are and how to train."""

    store_uri: str
    store_options: dict[str, Any]
    base_model_key: str
    dataset_key: str
    config: TrainConfig
    kind: Literal["sft", "dpo"]
    prompt_format: PromptFormat | None = None


@dataclass(frozen=True)
class TrainOutcome:
    """A stored checkpoint: its tree key and digest, the run's result, the node of rank 0,
    the nodes of every worker and the GPU ids each was granted (rank order), and the
    wall-clock span of the training (its GPU lease)."""

    model_key: str
    digest: str
    result: TrainResult
    node_id: str
    worker_nodes: tuple[str, ...] = ()
    worker_gpus: tuple[tuple[str, ...], ...] = ()
    started_at: float = 0.0
    ended_at: float = 0.0


def _all_workers(node: str) -> list[tuple[str, tuple[str, ...]]]:
    """Every worker's (node id, GPU ids), in rank order (just this one outside a process
    group)."""
    import torch.distributed as dist

    mine = (node, tuple(str(g) for g in ray.get_gpu_ids()))
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    workers: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(workers, mine)
    return workers


def train_here(job: TrainJob, world: int = 1, rank: int = 0) -> TrainOutcome | None:
    """Fetch, train this worker's share (worker ``rank`` of ``world``), and (rank 0) store
    the result and return it."""
    if job.kind != job.config.method:
        raise ValueError(f"kind {job.kind!r} does not match config.method {job.config.method!r}")
    if job.config.batch_size % world:
        raise ValueError(
            f"batch_size: {job.config.batch_size} rows per step do not split evenly over "
            f"{world} workers; make resources.train_workers a divisor of training.batch_size"
        )
    config = dataclasses.replace(job.config, batch_size=job.config.batch_size // world)
    started = time.time()
    store = open_store(job.store_uri, **(job.store_options or {}))
    node = ray.get_runtime_context().get_node_id()
    with (
        torch_threads(config.num_threads),
        tempfile.TemporaryDirectory(prefix="flywheel-train-") as tmp,
    ):
        work = Path(tmp)
        base = store.get_tree(job.base_model_key, work / "base")
        data = store.get_file(job.dataset_key, work / "data.jsonl")
        examples = read_examples(data, job.kind)
        if job.kind == "sft":
            from dataflywheel.training.sft import train_sft

            result = train_sft(base, examples, config, work / "out", job.prompt_format)
        else:
            from dataflywheel.training.dpo import train_dpo

            result = train_dpo(base, examples, config, work / "out", job.prompt_format)
        workers = _all_workers(node)
        _free_device_memory()
        if rank != 0:
            return None
        ref = store.put_tree(work / "out")
    return TrainOutcome(
        ref.key,
        ref.digest,
        result,
        node,
        tuple(n for n, _ in workers),
        tuple(g for _, g in workers),
        started,
        time.time(),
    )


def _free_device_memory() -> None:
    """Hand the GPU memory this worker's allocator still caches back to the device: the
    process stays warm for the next round, and under colocate the generators' engines
    take the GPU back as soon as training ends."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train_loop(loop_config: dict[str, TrainJob]) -> TrainOutcome | None:
    """One Ray Train worker."""
    import ray.train

    context = ray.train.get_context()
    return train_here(loop_config["job"], context.get_world_size(), context.get_world_rank())


@ray.remote(num_cpus=1)
def train_checkpoint(
    store_uri: str,
    store_options: dict[str, Any],
    base_model_key: str,
    dataset_key: str,
    config: TrainConfig,
    kind: Literal["sft", "dpo"],
    prompt_format: PromptFormat | None = None,
) -> TrainOutcome:
    """Train ``base_model_key`` on the JSONL ``dataset_key`` in this one process; store and
    return the result. ``prompt_format`` renders the rows' bare prompts as the generator
    renders them. Declare resources at the call
    (``workers.driver.placement.trainer_options``)."""
    job = TrainJob(
        store_uri, store_options, base_model_key, dataset_key, config, kind, prompt_format
    )
    outcome = train_here(job)
    assert outcome is not None  # rank 0 of 1
    return outcome


@ray.remote(num_cpus=0)
def train_distributed(
    store_uri: str,
    store_options: dict[str, Any],
    base_model_key: str,
    dataset_key: str,
    config: TrainConfig,
    kind: Literal["sft", "dpo"],
    prompt_format: PromptFormat | None,
    scaling: dict[str, Any],
) -> TrainOutcome:
    """``train_checkpoint`` on the Ray Train workers ``scaling`` describes
    (``ScalingConfig`` keywords, from ``workers.driver.placement.train_scaling``)."""
    if kind != config.method:
        raise ValueError(f"kind {kind!r} does not match config.method {config.method!r}")
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    job = TrainJob(
        store_uri, store_options, base_model_key, dataset_key, config, kind, prompt_format
    )
    # Ray Train keeps its run state here; nothing of ours is written to it (rank 0 uploads
    # the weights to the object store), so a local scratch folder is enough on any cluster.
    storage = tempfile.mkdtemp(prefix="flywheel-raytrain-")
    try:
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"job": job},
            scaling_config=ScalingConfig(**scaling),
            run_config=RunConfig(
                name=f"train-{uuid.uuid4().hex[:12]}",
                storage_path=storage,
                # Retries belong to the Prefect task (the checkpoint row makes them safe).
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        result = trainer.fit()
    except Exception as exc:  # TrainingFailedError: surface what failed inside
        cause = _cause(exc)
        if cause is exc:
            raise
        raise cause from exc
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    if not isinstance(result.return_value, TrainOutcome):
        raise RuntimeError(f"Ray Train's rank 0 returned {result.return_value!r}, no checkpoint")
    return result.return_value


def _cause(exc: BaseException) -> BaseException:
    """The lowest-ranked worker's own exception inside Ray Train's ``WorkerGroupError`` (or
    the controller's inside ``ControllerError``), so callers see e.g. the ValueError that
    explains bad data rather than "training failed"."""
    failures = getattr(exc, "worker_failures", None)
    if failures:
        return failures[min(failures)]
    return getattr(exc, "controller_failure", None) or exc
