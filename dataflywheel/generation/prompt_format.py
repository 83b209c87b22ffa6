"""How a prompt's text becomes the exact text a model is fed: few-shot exemplars, chat template.

Runs in: anywhere (pure). The chat-template path calls the ``apply_chat_template`` of a
tokenizer it is handed (the generator and trainer workers hold one); nothing here imports
transformers.

One :class:`PromptFormat` is applied in three places so they cannot drift apart: the
generator renders train and eval prompts with it (``workers/generator.py``,
``tasks/generate.py``), and the SFT/DPO trainer renders each dataset row's bare prompt with
it (``training/sft.py``, ``training/dpo.py``), so a model is trained on exactly the token
layout it is sampled with. Exemplars (``shots``) go in as earlier user/assistant turns when
the chat template is on, or as a text prefix (``prompt + completion`` blocks joined by
``separator``, the way the trainer itself joins prompt and completion) when it is off.
Whether training rows carry the shots is the caller's choice (``plan.prompt_format``): STaR
(Zelikman et al. 2022) samples with few-shot exemplars and fine-tunes on the bare questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dataflywheel.prompts import canonical_json, sha256_hex


@dataclass(frozen=True)
class PromptFormat:
    """``shots`` are (prompt, completion) exemplars shown before every prompt;
    ``chat_template`` wraps the conversation in the model's chat template."""

    chat_template: bool = False
    shots: tuple[tuple[str, str], ...] = ()
    separator: str = "\n\n"

    def __post_init__(self) -> None:
        for i, shot in enumerate(self.shots):
            if len(shot) != 2 or not all(isinstance(s, str) and s.strip() for s in shot):
                raise ValueError(f"shots[{i}]: expected a (prompt, completion) pair of texts")

    @property
    def is_identity(self) -> bool:
        """True when prompts are fed as they are (no template, no shots)."""
        return not self.chat_template and not self.shots

    @property
    def needs_tokenizer(self) -> bool:
        return self.chat_template

    def messages(self, prompt: str) -> list[dict[str, str]]:
        """The conversation fed for ``prompt``: the shots as earlier turns, then the prompt."""
        turns: list[dict[str, str]] = []
        for shot_prompt, shot_completion in self.shots:
            turns.append({"role": "user", "content": shot_prompt})
            turns.append({"role": "assistant", "content": shot_completion})
        turns.append({"role": "user", "content": prompt})
        return turns

    def text(self, prompt: str) -> str:
        """``prompt`` behind the shots as plain text (chat template off)."""
        blocks = [shot_prompt + shot_completion for shot_prompt, shot_completion in self.shots]
        return self.separator.join([*blocks, prompt])

    def render(self, prompts: Sequence[str], tokenizer: Any = None) -> list[str]:
        """The exact text fed to the model for each prompt, ready for its completion."""
        if not self.chat_template:
            return [self.text(p) for p in prompts]
        if tokenizer is None:
            raise ValueError("PromptFormat.render: the chat template needs the model's tokenizer")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "generation.chat_template: the model has no chat template; set chat_template: false"
            )
        texts = [
            tokenizer.apply_chat_template(
                self.messages(p), tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        return strip_template_bos(texts, tokenizer)

    def describe(self) -> dict[str, Any]:
        """What identifies the format, for lineage (sample parameters, checkpoint config)."""
        return {
            "chat_template": self.chat_template,
            "shots": len(self.shots),
            "shots_digest": sha256_hex(canonical_json([list(s) for s in self.shots]))
            if self.shots
            else None,
            "separator": self.separator if self.shots and not self.chat_template else None,
        }


def strip_template_bos(texts: list[str], tokenizer: Any) -> list[str]:
    """Backends and trainers tokenize with special tokens; when the tokenizer adds BOS
    itself, a template that writes BOS too would feed the model two of them."""
    bos = tokenizer.bos_token
    adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    if adds_bos:
        return [t[len(bos) :] if t.startswith(bos) else t for t in texts]
    return texts
