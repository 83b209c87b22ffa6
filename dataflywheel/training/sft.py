"""Supervised fine-tuning on prompt–completion pairs through TRL's ``SFTTrainer``.

Runs in: Ray worker (``workers/trainer.py``) and tests. Imports torch, transformers, TRL,
peft and datasets, so the flow process must never import this module.

The dataset is TRL's *prompt–completion* kind, so the loss covers completion tokens only
(``completion_only_loss``); TRL appends eos to every completion, so the model learns to stop.
``mode="lora"`` trains a peft LoRA adapter (Hu et al. 2021) and merges it before saving;
``mode="full"`` trains every weight. Either way ``out_dir`` receives a plain HF folder
(config, ``model.safetensors``, tokenizer) and nothing else is written: no intermediate
checkpoints, no reports, no progress bars.

Reproducibility: with ``dtype="float32"`` on CPU, the same base folder, examples (in the same
order), config and torch thread count give a byte-identical ``model.safetensors`` (checked by
``tests/integration/test_tiny_model.py``). What makes it so: ``seed`` and ``data_seed`` fix the
LoRA init, dropout masks and the sampler's shuffle; ``full_determinism`` turns on
``torch.use_deterministic_algorithms`` (for the duration of the call: ``determinism_scope``
puts the process-wide switches back); no dataloader workers. TRL's own defaults (bf16
autocast, gradient checkpointing) are switched off explicitly. A different thread count or
CPU (kernel choice: AVX-512 vs AMX) may change the bytes; GPUs are not covered.

The helpers below (``trainer_args``, ``determinism_scope``, ``lora_config``, ``save_merged``,
``step_losses``, ...) are shared with ``dpo.py``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dataflywheel.generation.prompt_format import PromptFormat
from dataflywheel.training import (
    PreferenceExample,
    SFTExample,
    TrainConfig,
    TrainResult,
)

__all__ = [
    "PreferenceExample",
    "SFTExample",
    "TrainConfig",
    "TrainResult",
    "train_sft",
]


def quiet() -> None:
    """Silence transformers / datasets / TRL progress bars and info logs in this process."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()


# Set by transformers' enable_full_determinism (trainer_utils.py) for the whole process.
_DETERMINISM_ENV = (
    "CUDA_LAUNCH_BLOCKING",
    "CUBLAS_WORKSPACE_CONFIG",
    "ASCEND_LAUNCH_BLOCKING",
    "HCCL_DETERMINISTIC",
    "FLASH_ATTENTION_DETERMINISTIC",
)


@contextmanager
def determinism_scope() -> Iterator[None]:
    """Undo ``full_determinism``'s process-wide switches on exit: a Ray worker process runs
    other tasks afterwards, and CUDA_LAUNCH_BLOCKING=1 would slow every later GPU kernel."""
    import torch

    env = {key: os.environ.get(key) for key in _DETERMINISM_ENV}
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    fill = torch.utils.deterministic.fill_uninitialized_memory
    # Deterministic mode also NaN-fills every torch.empty. On CPU, TRL's fused LM head
    # allocates a [tokens, 32768] tile buffer per step: filling it made training ~2.5x slower
    # (measured on the tiny model). Correct kernels never read uninitialised memory.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def trainer_args(config: TrainConfig, scratch: Path) -> dict[str, Any]:
    """Keyword arguments shared by ``SFTConfig`` and ``DPOConfig``."""
    import torch

    return {
        "output_dir": str(scratch),
        # transformers refuses bf16 without a GPU unless told the CPU is meant.
        "use_cpu": not torch.cuda.is_available(),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs or 1,
        "max_steps": config.max_steps or -1,
        "per_device_train_batch_size": config.batch_size // config.gradient_accumulation_steps,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        # transformers 5 folded warmup_ratio into warmup_steps: a float in [0, 1) is a ratio.
        "warmup_steps": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "adam_beta2": config.adam_beta2,
        # transformers' "constant" ignores warm-up steps; the warm-up variant honours both.
        "lr_scheduler_type": "constant_with_warmup"
        if config.lr_scheduler == "constant"
        else config.lr_scheduler,
        "seed": config.seed,
        "data_seed": config.seed,
        # Deterministic kernels (and, on GPU, CUBLAS_WORKSPACE_CONFIG and
        # CUDA_LAUNCH_BLOCKING: determinism_scope undoes them afterwards) only when the run
        # asks for bit-exact replays; the seeds above apply either way.
        "full_determinism": config.deterministic,
        # TRL defaults bf16=True and gradient_checkpointing=True; both change the numbers
        # and are on only when asked for.
        "bf16": config.dtype == "bfloat16",
        "fp16": False,
        # Under FSDP, activation checkpointing is FSDP's own (below), not the model's.
        "gradient_checkpointing": config.gradient_checkpointing and config.strategy != "fsdp",
        "dataloader_num_workers": 0,
        # Under Ray Train's DDP every trainable weight is used in every step (LoRA freezes
        # the rest): the unused-parameter search would only cost a graph walk per step.
        "ddp_find_unused_parameters": False,
        # Page-locked batches speed host-to-GPU copies; on CPU there is nothing to copy.
        "dataloader_pin_memory": torch.cuda.is_available(),
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "logging_strategy": "steps",
        "logging_steps": 1,
        "disable_tqdm": True,
        "log_level": "error",
        "push_to_hub": False,
        **fsdp_args(config),
    }


def fsdp_args(config: TrainConfig) -> dict[str, Any]:
    """transformers' FSDP settings (FSDP2 through accelerate) for ``strategy="fsdp"``: every
    worker keeps a shard of the weights, gradients and optimiser states; the full state
    dict is gathered once, for saving."""
    if config.strategy != "fsdp":
        return {}
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": True,
            "state_dict_type": "FULL_STATE_DICT",
            "activation_checkpointing": config.gradient_checkpointing,
        },
    }


def lora_config(config: TrainConfig) -> Any:
    """The peft ``LoraConfig`` for ``mode="lora"``, or None for full fine-tuning."""
    if config.mode != "lora":
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_for_training(model_dir: Path) -> tuple[Any, Any]:
    """The model (float32 weights) and tokenizer of ``model_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def checkpoint_dtype(config: TrainConfig, model_dir: Path) -> str:
    """The dtype the trained weights are saved in: ``config.checkpoint_dtype``, or for
    ``auto`` the base model's own dtype (its config.json) under bfloat16 precision and
    float32 under float32 precision."""
    if config.checkpoint_dtype != "auto":
        return config.checkpoint_dtype
    if config.dtype == "float32":
        return "float32"
    import json

    base = json.loads((Path(model_dir) / "config.json").read_text())
    text = base.get("text_config", base)
    own = text.get("dtype") or text.get("torch_dtype") or base.get("torch_dtype")
    return own if own in ("float32", "bfloat16", "float16") else "bfloat16"


def save_merged(trainer: Any, tokenizer: Any, out_dir: Path, dtype: str = "float32") -> Path:
    """Save a trainer's model as a plain HF folder in ``dtype``, merging a LoRA adapter
    first. Under FSDP every worker takes part in gathering the full weights; the main
    process writes them."""
    import torch

    model = trainer.model
    target = getattr(torch, dtype)
    if getattr(trainer, "is_fsdp_enabled", False):
        state = trainer.accelerator.get_state_dict(model)  # collective: every rank calls it
        if not trainer.accelerator.is_main_process:
            return out_dir
        unwrapped = trainer.accelerator.unwrap_model(model)
        unwrapped.save_pretrained(out_dir, state_dict={k: v.to(target) for k, v in state.items()})
        unwrapped.config.dtype = dtype
        unwrapped.config.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        return out_dir
    if hasattr(model, "merge_and_unload"):  # a peft model: fold B·A·scale into the weights
        model = model.merge_and_unload()
    model.to(target).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def silence(trainer: Any) -> Any:
    """Drop the callback that prints every log dict to stdout (``disable_tqdm`` adds it)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def step_losses(log_history: list[dict[str, Any]]) -> list[float]:
    """The training loss of every step from a trainer's ``state.log_history``."""
    return [float(entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]


def train_and_save(
    trainer: Any, tokenizer: Any, out_dir: Path, dtype: str, examples: int, started: float
) -> TrainResult:
    """Train silently, save the merged model to ``out_dir`` in ``dtype``, and say what was
    done (``started``: ``time.perf_counter()`` when loading began)."""
    import torch

    silence(trainer).train()
    save_merged(trainer, tokenizer, out_dir, dtype)
    losses = step_losses(trainer.state.log_history)
    return TrainResult(
        steps=trainer.state.global_step,
        final_loss=losses[-1] if losses else float("nan"),
        losses=losses,
        examples=examples,
        seconds=time.perf_counter() - started,
        threads=torch.get_num_threads(),
    )


def check_out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; train into a new folder")
    return out_dir


def render_prompts(
    prompts: list[str], prompt_format: PromptFormat | None, tokenizer: Any
) -> list[str]:
    """Rows hold bare prompts; the model is trained on the text it is sampled with (the
    chat template, and the exemplars when the run trains with them)."""
    if prompt_format is None or prompt_format.is_identity:
        return prompts
    return prompt_format.render(prompts, tokenizer)


def train_sft(
    model_dir: Path,
    examples: Sequence[SFTExample],
    config: TrainConfig,
    out_dir: Path,
    prompt_format: PromptFormat | None = None,
) -> TrainResult:
    """Fine-tune the model in ``model_dir`` on ``examples``; write the result to ``out_dir``.
    ``prompt_format`` renders each example's prompt as generation does; None: as it is."""
    if config.method != "sft":
        raise ValueError(f"method: train_sft needs method 'sft' (got {config.method!r})")
    if not examples:
        raise ValueError("examples: SFT needs at least one example")
    out_dir = check_out_dir(out_dir)
    started = time.perf_counter()
    quiet()
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_for_training(model_dir)
    prompts = render_prompts([e.prompt for e in examples], prompt_format, tokenizer)
    dataset = Dataset.from_dict({"prompt": prompts, "completion": [e.completion for e in examples]})
    with determinism_scope(), tempfile.TemporaryDirectory(prefix="sft-") as scratch:
        args = SFTConfig(
            **trainer_args(config, Path(scratch)),
            completion_only_loss=True,
            packing=False,
            max_length=None,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(config),
        )
        dtype = checkpoint_dtype(config, model_dir)
        return train_and_save(trainer, tokenizer, out_dir, dtype, len(examples), started)
