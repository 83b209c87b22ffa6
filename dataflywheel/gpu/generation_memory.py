"""The memory of one generator engine on its GPU: a vLLM engine (weights, KV cache,
profiled activations, CUDA graphs, within gpu_memory_utilization) or the transformers
backend (weights, the KV cache of one generate batch).

Runs in: anywhere (pure).
"""

from __future__ import annotations

import math

from dataflywheel.generation import engine_options
from dataflywheel.gpu.shape import DTYPE_BYTES, ModelShape
from dataflywheel.gpu.worker_plan import (
    CUDA_OVERHEAD,
    GIB,
    Line,
    WorkerPlan,
    either,
    format_bytes,
)
from dataflywheel.spec import RunSpec

# vLLM captures CUDA graphs for decode batch sizes unless enforce_eager; their memory pool
# counts inside gpu_memory_utilization (vLLM logs its size at start). An allowance.
CUDA_GRAPHS = 1 * GIB
# generation.batch_size's default for the transformers backend.
TRANSFORMERS_BATCH = 32


def engines_sharing_a_gpu(spec: RunSpec) -> int:
    """How many generator engines Ray may put on one GPU (``engine_options``)."""
    return engine_options.engines_per_gpu(spec)


def _utilization(spec: RunSpec) -> tuple[float, str]:
    """vLLM's gpu_memory_utilization for each engine, and where the number comes from: the
    value the generators are started with (``engine_options``)."""
    return engine_options.gpu_memory_utilization(spec)


def _vllm_profile_batch(gpu_gib: float) -> tuple[int, int]:
    """(tokens, sequences) of the batch vLLM profiles its activation peak with: its offline
    ``LLM`` defaults for max_num_batched_tokens / max_num_seqs (EngineArgs in
    vllm/engine/arg_utils.py: larger on GPUs of 70 GiB and more)."""
    return (16384, 1024) if gpu_gib >= 70 else (8192, 256)


def _generation_vllm(spec: RunSpec, shape: ModelShape, context: int) -> WorkerPlan:
    """vLLM takes gpu_memory_utilization × the GPU for weights, profiled activations, CUDA
    graphs and its KV cache, and refuses to start unless the cache holds one sequence of
    max_model_len tokens."""
    gen, engine, res = spec.generation, spec.generation.engine, spec.resources
    tp, size = engine.tensor_parallel_size, DTYPE_BYTES[gen.dtype]
    h, i = shape.hidden_size, shape.intermediate_size
    kv_token = shape.kv_bytes_per_token(size, tp)
    tokens, seqs = _vllm_profile_batch(res.gpu_memory_gib)
    split = f", ÷ tensor_parallel_size {tp}" if tp > 1 else ""
    lines = [
        Line("weights", f"weights ({gen.dtype}{split})", shape.parameters * size // tp),
        Line(
            "kv_cache",
            f"KV cache of one {context}-token sequence ({format_bytes(kv_token)}/token)",
            kv_token * context,
        ),
        # The peak of vLLM's profiling run: the MLP's inputs and gate/up/activation outputs
        # for every batched token, and float32 logits + probabilities for every sequence.
        Line(
            "activations",
            f"activations (vLLM's profiling batch: {tokens} tokens, {seqs} sequences)",
            tokens * (2 * h + 3 * i // tp) * size + seqs * shape.vocab_size * 4 * 2,
        ),
    ]
    if engine.enforce_eager is not True:
        lines.append(Line("cuda_graphs", "CUDA graphs", CUDA_GRAPHS))
    lines.append(Line("overhead", "CUDA context and allocator", CUDA_OVERHEAD))
    utilization, source = _utilization(spec)
    budget = int(utilization * res.gpu_memory_gib * GIB)
    fixed = sum(line.bytes for line in lines if line.key != "kv_cache")
    sequences = max(0, (budget - fixed) // (kv_token * context))
    notes = [
        f"the KV cache budget holds {sequences} full {context}-token sequence(s) "
        f"({max(0, budget - fixed) // kv_token} tokens)"
    ]
    refusals: list[str] = []
    if sequences < 1:
        options = ["lower generation.engine.max_model_len"]
        if tp < 8:
            options.append("shard the model with generation.engine.tensor_parallel_size")
        if utilization < 0.95 and res.gpu_sharing != "colocate":
            options.append("raise generation.engine.gpu_memory_utilization")
        if gen.dtype == "float32":
            options.append("use generation.dtype bfloat16")
        refusals.append(
            f"generation: {format_bytes(fixed + kv_token * context)} per GPU for the "
            f"weights, one {context}-token sequence's KV cache and overhead > "
            f"{format_bytes(budget)} ({source} × resources.gpu_memory_gib "
            f"{res.gpu_memory_gib:g}): {either(options)}"
        )
    sharing = engines_sharing_a_gpu(spec)
    if sharing * utilization > 1 + 1e-9:
        most = math.floor(100 / sharing) / 100
        if res.gpu_sharing == "colocate":
            where, fix = "under resources.gpu_sharing colocate", f"{most:g}, or leave it null"
        else:
            where = f"with resources.generator_gpus {res.generator_gpus:g}"
            fix = f"{most:g}, or set resources.generator_gpus to 1"
        refusals.append(
            f"generation: {sharing} engines may share one GPU {where}, each taking "
            f"generation.engine.gpu_memory_utilization {utilization:g} of it "
            f"({sharing * utilization:.2f} > 1): set gpu_memory_utilization to at most {fix}"
        )
    return WorkerPlan(
        "generation",
        tuple(lines),
        budget,
        f"{source} × resources.gpu_memory_gib {res.gpu_memory_gib:g}",
        tuple(refusals),
        tuple(notes),
        sequences,
    )


def _generation_transformers(spec: RunSpec, shape: ModelShape, seq_len: int) -> WorkerPlan:
    """transformers' generate: the weights, and the KV cache of one batch of sequences."""
    gen, res = spec.generation, spec.resources
    size, batch = DTYPE_BYTES[gen.dtype], gen.batch_size or TRANSFORMERS_BATCH
    h, i = shape.hidden_size, shape.intermediate_size
    lines = (
        Line("weights", f"weights ({gen.dtype})", shape.parameters * size),
        Line(
            "kv_cache",
            f"KV cache: {batch} sequences × {seq_len} tokens",
            batch * seq_len * shape.kv_bytes_per_token(size),
        ),
        Line(
            "activations",
            f"prefill activations and logits ({batch} sequences)",
            batch * seq_len * (2 * h + 3 * i) * size + batch * shape.vocab_size * 4 * 2,
        ),
        Line("overhead", "CUDA context and allocator", CUDA_OVERHEAD),
    )
    share = min(1.0, res.generator_gpus)
    budget = int(share * res.gpu_memory_gib * GIB)
    source = f"resources.gpu_memory_gib {res.gpu_memory_gib:g}"
    if share < 1:
        source = f"resources.generator_gpus {share:g} × {source}"
    total = sum(line.bytes for line in lines)
    refusals: tuple[str, ...] = ()
    if total > budget:
        options = ["lower generation.batch_size or generation.max_tokens", "use backend vllm"]
        refusals = (
            f"generation: {format_bytes(total)} per GPU > {format_bytes(budget)} ({source}): "
            f"{either(options)}",
        )
    return WorkerPlan("generation", lines, budget, source, refusals)


def generation_plan(spec: RunSpec, shape: ModelShape, context: int, seq_len: int) -> WorkerPlan:
    """One engine of ``spec.generation.backend`` on one GPU; ``context`` is the engine's
    max_model_len, ``seq_len`` a prompt plus its completion."""
    if spec.generation.backend == "vllm":
        return _generation_vllm(spec, shape, context)
    return _generation_transformers(spec, shape, seq_len)
