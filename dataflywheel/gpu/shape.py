"""The sizes of a Llama-like decoder, read from its Hugging Face ``config.json``: parameter
count, KV-cache bytes per token, LoRA adapter parameters.

Runs in: anywhere (pure). Llama, Mistral, Qwen2 and SmolLM2 configs share these fields
(``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``,
``head_dim``, ``intermediate_size``, ``vocab_size``, ``tie_word_embeddings``,
``max_position_embeddings``); a multimodal config nests them under ``text_config``. The
count covers the weight matrices and RMSNorm scales; biases (Qwen2's q/k/v) are left out,
well under 0.1% of a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# The linear layers of a Llama block that LoRA can target (peft matches them by name).
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_REQUIRED = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
)
# Read from the top level of a nested multimodal config when its text_config lacks them.
_TOP_LEVEL = ("tie_word_embeddings", "torch_dtype", "dtype")


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a Llama-like decoder that its memory depends on."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int | None
    dtype: str | None

    @property
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_parameters(self) -> int:
        """The output projection: shared with the embedding when tied."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one block (gated MLP: gate, up, down)."""
        h, q, kv = (
            self.hidden_size,
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
        )
        i = self.intermediate_size
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def layer_parameters(self) -> int:
        """One block: q/k/v/o, the gated MLP (3·h·i) and its two RMSNorm scales."""
        linear = sum(n_in * n_out for n_in, n_out in self.linear_shapes().values())
        return linear + 2 * self.hidden_size

    @property
    def parameters(self) -> int:
        """Embeddings, the blocks, the final norm and an untied lm_head."""
        return (
            self.embedding_parameters
            + self.lm_head_parameters
            + self.num_layers * self.layer_parameters
            + self.hidden_size
        )

    def kv_bytes_per_token(self, dtype_bytes: int, tensor_parallel: int = 1) -> int:
        """KV cache of one token on one GPU: 2 (K and V) · layers · kv heads · head_dim ·
        bytes. Tensor parallelism splits the KV heads; vLLM replicates them when there are
        fewer heads than GPUs, hence the ceiling."""
        heads = math.ceil(self.num_kv_heads / tensor_parallel)
        return 2 * self.num_layers * heads * self.head_dim * dtype_bytes

    def lora_parameters(self, r: int, target_modules: Iterable[str]) -> int:
        """Trainable adapter parameters: r·(in + out) per targeted linear per layer (Hu et
        al. 2021: A is in×r, B is r×out). Names outside :data:`LORA_MODULES` count nothing;
        :func:`unknown_lora_targets` lists them."""
        shapes = self.linear_shapes()
        per_layer = sum(r * sum(shapes[m]) for m in set(target_modules) if m in shapes)
        return self.num_layers * per_layer


def unknown_lora_targets(target_modules: Iterable[str]) -> list[str]:
    """The targeted names that are not a Llama block's linear layers (not counted)."""
    return sorted(set(target_modules) - set(LORA_MODULES))


def _positive_int(config: Mapping[str, Any], key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"the model config's {key} must be a positive integer (got {value!r})")
    return value


def shape_from_config(config: Mapping[str, Any]) -> ModelShape:
    """The :class:`ModelShape` of a Hugging Face config dict; ``ValueError`` names the fields
    missing for a config that is not Llama-like."""
    text = config.get("text_config")
    if isinstance(text, Mapping) and "hidden_size" not in config:
        config = {**{k: config[k] for k in _TOP_LEVEL if k in config}, **text}
    missing = [key for key in _REQUIRED if config.get(key) is None]
    if missing:
        raise ValueError(
            f"the model config lacks {', '.join(missing)}: the memory plan reads Llama-like "
            "configs (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, "
            "vocab_size)"
        )
    hidden, heads = (
        _positive_int(config, "hidden_size"),
        _positive_int(config, "num_attention_heads"),
    )
    kv_heads = (
        _positive_int(config, "num_key_value_heads") if config.get("num_key_value_heads") else heads
    )
    head_dim = _positive_int(config, "head_dim") if config.get("head_dim") else hidden // heads
    context = config.get("max_position_embeddings")
    dtype = config.get("dtype") or config.get("torch_dtype")
    return ModelShape(
        hidden_size=hidden,
        num_layers=_positive_int(config, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=_positive_int(config, "intermediate_size"),
        vocab_size=_positive_int(config, "vocab_size"),
        # LlamaConfig's default: a config without the key has its own lm_head.
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        max_position_embeddings=context if isinstance(context, int) and context > 0 else None,
        dtype=str(dtype) if dtype else None,
    )
