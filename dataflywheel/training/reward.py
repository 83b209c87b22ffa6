"""A tiny reward model built in code: a Llama sequence classifier with the char tokenizer.

Runs in: tests and Ray workers; imports torch/transformers lazily. The ``reward_model``
scorer (``verifiers/reward_model.py``) loads any one-label ``AutoModelForSequenceClassification``
folder; this one needs no hub download. The weights are a pure function of the shape and
the seed, and ``digit_bias`` (optional) makes the reward readable in tests: the blocks are
silenced and the head reads a direction only digit embeddings have, so a text whose last
token is a digit scores ``digit_bias``·√hidden_size-ish and any other text 0 (a sequence
classifier reads its last token).
"""

from __future__ import annotations

from pathlib import Path

from dataflywheel.training.tiny import TinyModelConfig, llama_config
from dataflywheel.training.tokenizer import VOCAB, save_char_tokenizer


def build_tiny_reward_model(
    cfg: TinyModelConfig, out_dir: Path, seed: int, digit_bias: float = 0.0
) -> Path:
    """Write a randomly initialised one-label Llama classifier + tokenizer into ``out_dir``."""
    import torch
    from transformers import LlamaForSequenceClassification

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; build the reward model into a new folder")
    config = llama_config(cfg)
    config.num_labels = 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(config)
        if digit_bias:
            with torch.no_grad():
                direction = torch.zeros(config.hidden_size)
                direction[0] = 1.0
                model.score.weight.zero_()
                model.score.weight[0, 0] = digit_bias
                # The last layer's output is what the head reads: zero every block's
                # contribution so the final hidden state is the (normed) embedding.
                for layer in model.model.layers:
                    layer.self_attn.o_proj.weight.zero_()
                    layer.mlp.down_proj.weight.zero_()
                emb = model.model.embed_tokens.weight
                emb.zero_()
                emb[:, 1] = 1.0  # a constant direction so the RMS norm is defined
                for i, token in enumerate(VOCAB):
                    if token.isdigit():
                        emb[i] += direction
    model.save_pretrained(out_dir)
    save_char_tokenizer(out_dir, max_length=cfg.max_seq_len)
    return out_dir
