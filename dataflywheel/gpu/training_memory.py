"""The memory of one training worker on its GPU: weights, gradients and AdamW states (or a
frozen model and LoRA adapters), activations, logits; sharded by FSDP where it shards them.

Runs in: anywhere (pure). The trainer (``training/sft.py``, ``training/dpo.py``) loads
float32 weights and trains them in float32 or under bfloat16 autocast.
"""

from __future__ import annotations

from dataflywheel.gpu.generation_memory import engines_sharing_a_gpu
from dataflywheel.gpu.shape import ModelShape
from dataflywheel.gpu.worker_plan import (
    CUDA_OVERHEAD,
    GIB,
    Line,
    WorkerPlan,
    either,
    format_bytes,
    format_count,
)
from dataflywheel.spec import RunSpec


def _cast_copies(spec: RunSpec, shape: ModelShape) -> int:
    """bf16 copies of the float32 weights that autocast makes for each matmul and the
    backward pass keeps. With checkpointing only one block's (and the lm_head's) are alive;
    in full fine-tuning with DDP and no accumulation they are freed as the gradients fill
    in, within the 16 bytes/parameter already counted."""
    t = spec.training
    if spec.train_precision != "bfloat16":
        return 0
    block = shape.layer_parameters - 2 * shape.hidden_size
    head = shape.vocab_size * shape.hidden_size  # the lm_head, or the tied embedding
    if t.gradient_checkpointing:
        return 2 * (block + head)
    if t.mode == "full" and t.strategy == "ddp" and t.gradient_accumulation_steps == 1:
        return 0
    return 2 * (shape.num_layers * block + head)


def training_plan(spec: RunSpec, shape: ModelShape, seq_len: int) -> WorkerPlan:
    """One training worker on one GPU, training on sequences of ``seq_len`` tokens."""
    t, res = spec.training, spec.resources
    params, shard = shape.parameters, res.train_workers if t.strategy == "fsdp" else 1
    sharded = f" ÷ {shard} (fsdp)" if shard > 1 else ""
    micro = t.batch_size // (res.train_workers * t.gradient_accumulation_steps)
    rows = micro * (2 if t.method == "dpo" else 1)  # DPO runs chosen and rejected together
    lines: list[Line] = []
    if t.mode == "full":
        lines += [
            Line("weights", f"weights (float32){sharded}", 4 * params // shard),
            Line("gradients", f"gradients (float32){sharded}", 4 * params // shard),
            Line("optimizer", f"AdamW m and v (float32){sharded}", 8 * params // shard),
        ]
        if t.method == "dpo":
            lines.append(Line("reference", f"DPO reference model{sharded}", 4 * params // shard))
    else:
        assert t.lora is not None  # the spec fills it in for mode lora
        lora = shape.lora_parameters(t.lora.r, t.lora.target_modules)
        lines += [
            Line("weights", f"frozen weights (float32){sharded}", 4 * params // shard),
            Line(
                "adapters",
                f"LoRA r={t.lora.r}: {format_count(lora)} parameters × 16 B{sharded}",
                16 * lora // shard,
            ),
        ]
    copies = _cast_copies(spec, shape)
    if copies:
        lines.append(Line("casts", "bfloat16 weight copies kept for backward", copies))
    if shard > 1:
        # FSDP gathers one block's full weights to run it, and prefetches the next one.
        lines.append(Line("gathered", "FSDP: two gathered blocks", 2 * 4 * shape.layer_parameters))
    s, h, a = seq_len, shape.hidden_size, shape.num_heads
    scale = 1 if spec.train_precision == "bfloat16" else 2
    layer = s * rows * h * (34 + 5 * a * s / h) * scale
    if t.gradient_checkpointing:
        acts = shape.num_layers * 2 * s * rows * h * scale + layer
        label = f"activations, checkpointed ({rows} × {s} tokens)"
    else:
        acts = shape.num_layers * layer
        label = f"activations ({rows} × {s} tokens, {spec.train_precision})"
    lines += [
        Line("activations", label, int(acts)),
        Line("logits", "logits and their gradient (float32)", rows * s * shape.vocab_size * 8),
        Line("overhead", "CUDA context and allocator", CUDA_OVERHEAD),
    ]
    budget_gib, source = res.gpu_memory_gib, f"resources.gpu_memory_gib {res.gpu_memory_gib:g}"
    if res.gpu_sharing == "colocate":
        sleeping = engines_sharing_a_gpu(spec)
        # A sleeping engine has released its weights and KV cache but keeps its process's
        # CUDA context on the GPU.
        lines.append(
            Line("sleeping", f"{sleeping} sleeping generator(s)", sleeping * CUDA_OVERHEAD)
        )
    elif res.train_gpus_per_worker < 1:
        budget_gib *= res.train_gpus_per_worker
        source = f"resources.train_gpus_per_worker {res.train_gpus_per_worker:g} × {source}"
    budget = int(budget_gib * GIB)
    lines_t = tuple(lines)
    total = sum(line.bytes for line in lines_t)
    refusals: tuple[str, ...] = ()
    if total > budget:
        options: list[str] = []
        if t.mode == "full":
            options.append("use training.mode lora")
            options.append(
                "more resources.train_workers"
                if t.strategy == "fsdp"
                else "training.strategy fsdp with more resources.train_workers"
            )
        if not t.gradient_checkpointing:
            options.append("set training.gradient_checkpointing: true")
        if micro > 1:
            options.append(
                f"raise training.gradient_accumulation_steps (micro-batches of {micro} rows)"
            )
        if spec.train_precision == "float32":
            options.append("use training.precision bfloat16")
        where = source if budget_gib == res.gpu_memory_gib else f"{budget_gib:g} GiB ({source})"
        refusals = (f"training: {format_bytes(total)} per GPU > {where}: {either(options)}",)
    return WorkerPlan("training", lines_t, budget, source, refusals)
