"""Load a user's prompt set from a JSONL file: one JSON object per line.

Runs in: anywhere (pure). It reads only the one file it is given.

Fields of a line (anything else is refused, so a typo never drops data silently):

* ``prompt`` or ``text`` (required): the prompt text.
* ``answer`` (a string or number, stored as ``{"answer": "<it>"}``) or ``reference`` (an
  object such as ``{"answer": "42"}``, or a string/number): the reference, if any.
* ``tests``: unit tests for code prompts (string).
* ``difficulty``: an integer ≥ 0.
* ``split``: e.g. ``train`` or ``eval`` (default: the ``default_split`` argument).
* ``metadata``: an object kept alongside the prompt.

Every error names the file, the line number and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dataflywheel.prompts import Prompt

ALLOWED_FIELDS = (
    "prompt",
    "text",
    "answer",
    "reference",
    "tests",
    "difficulty",
    "split",
    "metadata",
)


class PromptFileError(ValueError):
    """A JSONL prompt file that cannot be loaded as it is; the message says where and why."""


def _reference(row: dict[str, Any], where: str) -> dict[str, Any] | None:
    if "answer" in row and "reference" in row:
        raise PromptFileError(f"{where}: give either 'answer' or 'reference', not both")
    key = "answer" if "answer" in row else "reference"
    value = row.get(key)
    if value is None:
        return None
    if key == "reference" and isinstance(value, dict):
        if not value:
            raise PromptFileError(f"{where}: field 'reference': must not be an empty object")
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PromptFileError(
            f"{where}: field {key!r}: must be a string or number"
            + (" (or an object for 'reference')" if key == "reference" else "")
            + f", got {type(value).__name__}"
        )
    return {"answer": value if isinstance(value, str) else json.dumps(value)}


def _prompt_from_row(row: Any, prompt_set: str, default_split: str, where: str) -> Prompt:
    if not isinstance(row, dict):
        raise PromptFileError(f"{where}: each line must be a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - set(ALLOWED_FIELDS))
    if unknown:
        raise PromptFileError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; allowed fields: "
            f"{', '.join(ALLOWED_FIELDS)} (put anything else under 'metadata')"
        )
    if "prompt" in row and "text" in row:
        raise PromptFileError(f"{where}: give either 'prompt' or 'text', not both")
    text_key = "prompt" if "prompt" in row else "text"
    text = row.get(text_key)
    if not isinstance(text, str) or not text.strip():
        raise PromptFileError(
            f"{where}: field 'prompt' (or 'text'): required, a non-empty string; got {text!r}"
        )
    tests = row.get("tests")
    if tests is not None and not isinstance(tests, str):
        raise PromptFileError(
            f"{where}: field 'tests': must be a string, got {type(tests).__name__}"
        )
    difficulty = row.get("difficulty")
    if difficulty is not None and (
        isinstance(difficulty, bool) or not isinstance(difficulty, int) or difficulty < 0
    ):
        raise PromptFileError(
            f"{where}: field 'difficulty': must be an integer ≥ 0, got {difficulty!r}"
        )
    split = row.get("split", default_split)
    if not isinstance(split, str) or not split:
        raise PromptFileError(f"{where}: field 'split': must be a non-empty string, got {split!r}")
    metadata = row.get("metadata", {})
    if not isinstance(metadata, dict):
        raise PromptFileError(
            f"{where}: field 'metadata': must be an object, got {type(metadata).__name__}"
        )
    return Prompt(
        prompt_set=prompt_set,
        split=split,
        text=text,
        reference=_reference(row, where),
        tests=tests,
        difficulty=difficulty,
        metadata=metadata,
    )


def load_jsonl(
    path: str | Path,
    *,
    prompt_set: str | None = None,
    default_split: str = "train",
    split: str | None = None,
) -> list[Prompt]:
    """Prompts of a JSONL file in file order; only those of ``split`` when it is given.

    ``prompt_set`` defaults to the file name without its extension. Blank lines are skipped.
    Two lines with the same content (same text, reference, tests, difficulty and split) are
    refused: the database keys prompts by content, so one would vanish.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{path}: prompt file not found")
    name = prompt_set or path.stem
    prompts: list[Prompt] = []
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptFileError(
                    f"{where}: not valid JSON ({exc.msg} at column {exc.colno})"
                ) from None
            prompt = _prompt_from_row(row, name, default_split, where)
            seen_at = first_line.setdefault(prompt.content_hash, number)
            if seen_at != number:
                raise PromptFileError(f"{where}: duplicate of line {seen_at}; remove one of them")
            if split is None or prompt.split == split:
                prompts.append(prompt)
    if not first_line:
        raise PromptFileError(f"{path}: no prompts in file")
    return prompts
