"""The character-level tokenizer of the built-in tiny models, built in code.

Runs in: anywhere that has the ``tokenizers``/``transformers`` packages (Ray workers, tests);
the flow process never imports it.

One token per character: four special tokens, then digits, lowercase, uppercase, ASCII
punctuation, space and newline, in that order, so the vocabulary (and every token id) is the
same on every machine and in every version. Any other character becomes ``<unk>`` (decode
cannot give it back). Encoding prepends ``<bos>``; ``<eos>`` ends a completion. The tokenizer
is a ``tokenizers`` WordLevel model behind ``PreTrainedTokenizerFast``, saved with
``save_pretrained`` so that ``AutoTokenizer.from_pretrained(dir)`` (and vLLM) load it without
any code from this package.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
CHARACTERS: str = (
    string.digits + string.ascii_lowercase + string.ascii_uppercase + string.punctuation + " \n"
)
VOCAB: tuple[str, ...] = SPECIAL_TOKENS + tuple(CHARACTERS)

# A plain "role: content" transcript spelled in characters (the vocabulary has no role
# tokens). The assistant turn ends with <eos>, so a model trained on rendered chats stops.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] + ': ' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


def vocab_size() -> int:
    """Number of tokens (what the model's embedding must hold)."""
    return len(VOCAB)


def build_char_tokenizer(max_length: int = 64) -> PreTrainedTokenizerFast:
    """The character tokenizer; ``max_length`` becomes its ``model_max_length``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Every character is its own pre-token ([\s\S] so newlines split too); Fuse joins the
    # decoded characters back without the spaces WordLevel would put between them.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=max_length,
        chat_template=CHAT_TEMPLATE,
    )


def save_char_tokenizer(out_dir: Path, max_length: int = 64) -> Path:
    """Write the tokenizer files into ``out_dir`` (created if needed); return it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build_char_tokenizer(max_length).save_pretrained(out_dir)
    return out_dir
