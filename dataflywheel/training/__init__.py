"""Training: SFT and DPO on TRL (+ peft LoRA), the tiny-model factory and its tokenizer.

Runs in: the types here are pure and safe anywhere (the flow builds :class:`TrainConfig`);
the trainers (``sft.py``, ``dpo.py``), ``tiny.py`` and ``tokenizer.py`` import torch /
transformers / TRL and run only in Ray workers (``workers/trainer.py``,
``workers/bootstrap.py``) and tests. This module must never import them.

Every checkpoint is a plain Hugging Face folder (config, safetensors weights, tokenizer): a
LoRA adapter is merged before saving, so vLLM, transformers and the next round load it alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

METHODS = ("sft", "dpo")
MODES = ("lora", "full")


@dataclass(frozen=True)
class SFTExample:
    """One supervised pair: loss is taken on ``completion`` only, never on ``prompt``."""

    prompt: str
    completion: str


@dataclass(frozen=True)
class PreferenceExample:
    """One DPO pair (Rafailov et al. 2023): ``chosen`` is preferred over ``rejected``."""

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class TrainConfig:
    """How one checkpoint is trained (the run spec's ``TrainingSpec`` maps onto it).

    Set exactly one of ``epochs`` and ``max_steps``. ``batch_size`` is examples per
    optimiser step, computed in ``gradient_accumulation_steps`` micro-batches (per worker:
    the trainer divides it by the number of workers first). ``warmup_ratio`` is the share
    of steps with a linear warmup; the schedule then follows ``lr_scheduler`` (linear or
    cosine decay to 0, or constant). ``beta`` is used by DPO only.
    ``num_threads`` is torch's intra-op thread count in the trainer (``None``: what Ray granted).
    ``dtype`` is the training precision: ``float32`` (reproducible on CPU) or ``bfloat16``
    (autocast mixed precision over float32 master weights). ``checkpoint_dtype`` is what the
    saved weights are stored in (``auto``: the base model's own dtype under bfloat16,
    float32 under float32). ``gradient_checkpointing`` recomputes activations in the
    backward pass; ``strategy`` ``fsdp`` shards the model over the workers (``ddp``
    replicates it). ``deterministic`` turns on deterministic kernels (bit-exact replays).
    """

    method: Literal["sft", "dpo"]
    mode: Literal["lora", "full"]
    learning_rate: float
    batch_size: int
    seed: int
    epochs: int | None = None
    max_steps: int | None = None
    lora_r: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = field(default=("q_proj", "k_proj", "v_proj", "o_proj"))
    beta: float = 0.1
    dtype: Literal["float32", "bfloat16"] = "float32"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: Literal["linear", "constant", "cosine"] = "linear"
    adam_beta2: float = 0.999
    num_threads: int | None = None
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    strategy: Literal["ddp", "fsdp"] = "ddp"
    checkpoint_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    deterministic: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: one of {', '.join(METHODS)} (got {self.method!r})")
        if self.mode not in MODES:
            raise ValueError(f"mode: one of {', '.join(MODES)} (got {self.mode!r})")
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("epochs: set exactly one of epochs and max_steps")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs: must be ≥ 1 (got {self.epochs})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps: must be ≥ 1 (got {self.max_steps})")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be ≥ 1 (got {self.batch_size})")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate: must be > 0 (got {self.learning_rate})")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio: must be in [0, 1) (got {self.warmup_ratio})")
        if self.lr_scheduler not in ("linear", "constant", "cosine"):
            raise ValueError(
                f"lr_scheduler: linear, constant or cosine (got {self.lr_scheduler!r})"
            )
        if not 0 <= self.weight_decay < 1 or not 0 < self.adam_beta2 < 1:
            raise ValueError("weight_decay: must be in [0, 1) and adam_beta2 in (0, 1)")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads: must be ≥ 1 (got {self.num_threads})")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype: float32 or bfloat16 (got {self.dtype!r})")
        if self.mode == "lora" and (self.lora_r < 1 or not self.lora_target_modules):
            raise ValueError("lora_r: LoRA needs lora_r ≥ 1 and at least one target module")
        if self.beta <= 0:
            raise ValueError(f"beta: must be > 0 (got {self.beta})")
        accumulation = self.gradient_accumulation_steps
        if accumulation < 1 or self.batch_size % accumulation:
            raise ValueError(
                f"gradient_accumulation_steps: must be ≥ 1 and divide batch_size "
                f"{self.batch_size} (got {accumulation})"
            )
        if self.strategy not in ("ddp", "fsdp"):
            raise ValueError(f"strategy: ddp or fsdp (got {self.strategy!r})")
        if self.checkpoint_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(
                f"checkpoint_dtype: auto, float32 or bfloat16 (got {self.checkpoint_dtype!r})"
            )


@dataclass(frozen=True)
class TrainResult:
    """What a training run did: optimiser ``steps``, the logged loss of every step (TRL's
    per-step log, so ``losses[i]`` is step i+1), the last of them, the number of training
    ``examples``, wall-clock ``seconds`` (model load to saved folder) and the torch ``threads``
    it ran on (bit-exact replay on CPU needs the same count)."""

    steps: int
    final_loss: float
    losses: list[float]
    examples: int
    seconds: float
    threads: int = 1


__all__ = [
    "METHODS",
    "MODES",
    "PreferenceExample",
    "SFTExample",
    "TrainConfig",
    "TrainResult",
    "read_examples",
]


def read_examples(
    path: Path, kind: Literal["sft", "dpo"]
) -> list[SFTExample] | list[PreferenceExample]:
    """Training examples from a JSONL file: rows ``{"prompt", "completion"}`` for ``sft``,
    ``{"prompt", "chosen", "rejected"}`` for ``dpo``. Other keys (e.g. lineage ids) are
    ignored; a row missing a field, or with a non-string one, raises naming its line."""
    fields = {"sft": ("prompt", "completion"), "dpo": ("prompt", "chosen", "rejected")}[kind]
    build = SFTExample if kind == "sft" else PreferenceExample
    out: list = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object")
            bad = [f for f in fields if not isinstance(row.get(f), str)]
            if bad:
                raise ValueError(
                    f"{path}:{number}: {kind} rows need string fields {', '.join(fields)}; "
                    f"missing or not a string: {', '.join(bad)}"
                )
            out.append(build(*(row[f] for f in fields)))
    return out
