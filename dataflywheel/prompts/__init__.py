"""The prompt record every source produces, and how a prompt is identified.

Runs in: anywhere (pure). A :class:`Prompt` is identified by ``content_hash``, the sha256 of
the canonical JSON of (prompt_set, split, text, reference, tests, difficulty): the same value
``db/models.py`` stores in ``prompts.content_hash`` (unique), so loading a prompt set twice
inserts nothing new. ``text_hash`` covers the text alone and finds one prompt across splits
and sets (contamination checks).

Sources: ``arithmetic.py`` (built-in synthetic families) and ``jsonl.py`` (user files).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


def canonical_json(value: Any) -> str:
    """The one canonical JSON form hashed anywhere in the core (prompts, specs, verifiers).

    Sorted keys, no whitespace, UTF-8 kept as is: equal values give equal bytes in every
    process (unlike ``hash()``, which is salted per process).
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical_jsonl(rows: list[dict[str, Any]]) -> bytes:
    """Rows as JSONL, one :func:`canonical_json` line each: the same rows always give the same
    bytes, hence the same digest (datasets and training mixes in the store)."""
    return "".join(canonical_json(row) + "\n" for row in rows).encode()


def sha256_hex(text: str) -> str:
    """Hex sha256 of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_hash(
    *,
    prompt_set: str,
    split: str,
    text: str,
    reference: dict[str, Any] | None,
    tests: str | None,
    difficulty: int | None,
) -> str:
    """A prompt's identity (``prompts.content_hash``): sha256 of the canonical JSON of its
    content. The one definition: :class:`Prompt` and bulk ingestion both call it."""
    return sha256_hex(
        canonical_json(
            {
                "prompt_set": prompt_set,
                "split": split,
                "text": text,
                "reference": reference,
                "tests": tests,
                "difficulty": difficulty,
            }
        )
    )


@dataclass(frozen=True)
class Prompt:
    """A prompt with its reference answer or tests. Not hashable: use ``content_hash``."""

    prompt_set: str
    split: str
    text: str
    reference: dict[str, Any] | None = None
    tests: str | None = None
    difficulty: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Loud at construction: a malformed prompt must not reach the database or a verifier.
        if not isinstance(self.prompt_set, str) or not self.prompt_set:
            raise ValueError(
                f"Prompt.prompt_set must be a non-empty string, got {self.prompt_set!r}"
            )
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(f"Prompt.split must be a non-empty string, got {self.split!r}")
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"Prompt.text must be a non-empty string, got {self.text!r}")
        if self.reference is not None and not isinstance(self.reference, dict):
            raise ValueError(
                f"Prompt.reference must be a dict such as {{'answer': '42'}} or None, "
                f"got {type(self.reference).__name__}"
            )
        if self.tests is not None and not isinstance(self.tests, str):
            raise ValueError(
                f"Prompt.tests must be a string or None, got {type(self.tests).__name__}"
            )
        difficulty = self.difficulty
        if difficulty is not None and (
            isinstance(difficulty, bool) or not isinstance(difficulty, int) or difficulty < 0
        ):
            raise ValueError(
                f"Prompt.difficulty must be an integer ≥ 0 or None, got {difficulty!r}"
            )
        if not isinstance(self.metadata, dict):
            raise ValueError(f"Prompt.metadata must be a dict, got {type(self.metadata).__name__}")

    @property
    def content_hash(self) -> str:
        """sha256 of canonical JSON of (prompt_set, split, text, reference, tests, difficulty)."""
        return content_hash(
            prompt_set=self.prompt_set,
            split=self.split,
            text=self.text,
            reference=self.reference,
            tests=self.tests,
            difficulty=self.difficulty,
        )

    @property
    def text_hash(self) -> str:
        """sha256 of the text alone."""
        return sha256_hex(self.text)

    def describe(self) -> str:
        """A short handle for error messages: set, split and the start of the content hash."""
        return f"{self.prompt_set}/{self.split}#{self.content_hash[:12]}"
