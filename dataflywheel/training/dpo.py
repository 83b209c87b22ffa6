"""Direct preference optimisation (Rafailov et al. 2023) through TRL's ``DPOTrainer``.

Runs in: Ray worker (``workers/trainer.py``) and tests. Imports torch, transformers, TRL,
peft and datasets, so the flow process must never import this module.

The reference policy is the starting model: with ``mode="lora"`` TRL gets it by disabling the
adapter (no second copy in memory); with ``mode="full"`` a second copy is loaded from
``model_dir``. Dropout is off in both (TRL's ``disable_dropout``), so the policy and reference
log-probabilities agree at step 0. The saved folder, the determinism guarantee and the
silenced output are those of ``sft.py``, whose helpers this module reuses.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from dataflywheel.generation.prompt_format import PromptFormat
from dataflywheel.training import PreferenceExample, TrainConfig, TrainResult
from dataflywheel.training.sft import (
    check_out_dir,
    checkpoint_dtype,
    determinism_scope,
    load_for_training,
    lora_config,
    quiet,
    render_prompts,
    train_and_save,
    trainer_args,
)


def train_dpo(
    model_dir: Path,
    examples: Sequence[PreferenceExample],
    config: TrainConfig,
    out_dir: Path,
    prompt_format: PromptFormat | None = None,
) -> TrainResult:
    """DPO-train the model in ``model_dir`` on ``examples``; write the result to ``out_dir``.
    ``prompt_format`` renders each pair's prompt as generation does; None: as it is."""
    if config.method != "dpo":
        raise ValueError(f"method: train_dpo needs method 'dpo' (got {config.method!r})")
    if not examples:
        raise ValueError("examples: DPO needs at least one preference pair")
    out_dir = check_out_dir(out_dir)
    started = time.perf_counter()
    quiet()
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = load_for_training(model_dir)
    ref_model = None if config.mode == "lora" else load_for_training(model_dir)[0]
    dataset = Dataset.from_dict(
        {
            "prompt": render_prompts([e.prompt for e in examples], prompt_format, tokenizer),
            "chosen": [e.chosen for e in examples],
            "rejected": [e.rejected for e in examples],
        }
    )
    with determinism_scope(), tempfile.TemporaryDirectory(prefix="dpo-") as scratch:
        args = DPOConfig(
            **trainer_args(config, Path(scratch)),
            beta=config.beta,
            max_length=None,
            precompute_ref_log_probs=False,
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(config),
        )
        dtype = checkpoint_dtype(config, model_dir)
        return train_and_save(trainer, tokenizer, out_dir, dtype, len(examples), started)
