"""``train_checkpoint``: one SFT or DPO run from store keys to a stored checkpoint.

Runs in: Ray worker. Importing this module is safe in the flow process: the trainers (torch,
TRL) are imported inside the remote function only.

Inputs and outputs are object-store keys: the base model tree, a JSONL dataset (rows
``{"prompt", "completion"}`` for SFT, ``{"prompt", "chosen", "rejected"}`` for DPO), and the
trained folder stored back with ``put_tree``. Everything local lives in a temporary directory
removed at the end. Declare resources at the call, e.g.
``train_checkpoint.options(num_cpus=2).remote(...)``; Ray sets ``OMP_NUM_THREADS`` to the
CPUs granted, which torch uses as its thread count, unless ``config.num_threads`` says
otherwise (the run spec's ``training.num_threads``: the generator idles while the trainer
runs, so a CPU machine can give the trainer every core). Replays are bit-exact on CPU float32 (see
``dataflywheel/training/sft.py``) provided the thread count is the same.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ray

from dataflywheel.generation.prompt_format import PromptFormat
from dataflywheel.store import open_store
from dataflywheel.training import TrainConfig, TrainResult, read_examples


@dataclass(frozen=True)
class TrainOutcome:
    """A stored checkpoint: its tree key and digest, the run's result, the node it ran on."""

    model_key: str
    digest: str
    result: TrainResult
    node_id: str


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """torch's thread count for one training run; the worker process keeps its own after."""
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@ray.remote
def train_checkpoint(
    store_uri: str,
    store_options: dict[str, Any],
    base_model_key: str,
    dataset_key: str,
    config: TrainConfig,
    kind: Literal["sft", "dpo"],
    prompt_format: PromptFormat | None = None,
) -> TrainOutcome:
    """Train ``base_model_key`` on the JSONL ``dataset_key``; store and return the result.
    ``prompt_format`` renders the rows' bare prompts as the generator renders them."""
    if kind != config.method:
        raise ValueError(f"kind {kind!r} does not match config.method {config.method!r}")
    store = open_store(store_uri, **(store_options or {}))
    with _threads(config.num_threads), tempfile.TemporaryDirectory(prefix="flywheel-train-") as tmp:
        work = Path(tmp)
        base = store.get_tree(base_model_key, work / "base")
        data = store.get_file(dataset_key, work / "data.jsonl")
        examples = read_examples(data, kind)
        if kind == "sft":
            from dataflywheel.training.sft import train_sft

            result = train_sft(base, examples, config, work / "out", prompt_format)
        else:
            from dataflywheel.training.dpo import train_dpo

            result = train_dpo(base, examples, config, work / "out", prompt_format)
        ref = store.put_tree(work / "out")
    return TrainOutcome(ref.key, ref.digest, result, ray.get_runtime_context().get_node_id())
