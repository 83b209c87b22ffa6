"""Pull the final answer out of a completion; normalise and parse it.

Runs in: anywhere (pure). Three extraction modes:

* ``answer_line``: the last ``Answer: <value>`` in the text (case-insensitive). Lenient: the
  first number on that line if it has one (``Answer: 19 apples`` -> ``19``), and without any
  answer line the last number in the text. Strict: the whole value of the last answer line,
  and no fallback.
* ``last_number``: the last number in the text. Strict: the whole completion must be one
  number.
* ``full``: the whole completion, normalised (the character-level arithmetic model emits
  just the answer).

``None`` means "no answer": the verifiers turn it into a 0 with ``reason="no_answer"``.
"""

from __future__ import annotations

import math
import re
from typing import Literal

ExtractMode = Literal["answer_line", "last_number", "full"]

# A sign only where it cannot be a binary minus ("7-3" ends in 3, not -3); thousands
# separators only in groups of three so that "1,2,3" ends in 3.
_DIGITS = r"(?<![\d.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER = re.compile(_DIGITS + r"(?!\d)")
# What lenient extraction takes as "a number": also a simple fraction such as 3/4.
_NUMBER_TOKEN = re.compile(_DIGITS + r"(?:\s*/\s*\d+)?(?!\d)")
_ANSWER_LINE = re.compile(r"(?i)\banswer\s*[:=]\s*([^\n]*)")
_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_WRAPPERS = ("**", "__", "`", "$")


def normalise(text: str) -> str:
    """Strip, unwrap markdown emphasis/code/dollars, drop a final full stop, collapse spaces."""
    value = " ".join(text.split())
    changed = True
    while changed and value:
        changed = False
        for wrapper in _WRAPPERS:
            if (
                len(value) > 2 * len(wrapper) - 1
                and value.startswith(wrapper)
                and value.endswith(wrapper)
            ):
                value = value[len(wrapper) : -len(wrapper)].strip()
                changed = True
        if value.endswith(".") and not _NUMBER.fullmatch(value):
            value = value[:-1].rstrip()
            changed = True
    return value


def _number_token(token: str) -> str:
    return re.sub(r"\s+", "", token.replace(",", "")).lstrip("+")


def last_number(text: str) -> str | None:
    """The last number (or a/b fraction) in ``text``; thousands separators and '+' removed."""
    matches = _NUMBER_TOKEN.findall(text)
    return _number_token(matches[-1]) if matches else None


def extract_answer(
    text: str, mode: ExtractMode = "answer_line", strict: bool = False
) -> str | None:
    """The completion's answer, or ``None`` when it gives none in the expected form."""
    if mode == "full":
        value = normalise(text)
        return value or None
    if mode == "last_number":
        if strict:
            value = normalise(text)
            return _number_token(value) if _NUMBER.fullmatch(value) else None
        return last_number(text)
    if mode == "answer_line":
        lines = _ANSWER_LINE.findall(text)
        if not lines:
            return None if strict else last_number(text)
        value = normalise(lines[-1])
        if strict:
            return value or None
        first = _NUMBER_TOKEN.search(value)
        if first:
            return _number_token(first.group(0))
        return value or None
    raise ValueError(f"unknown extraction mode {mode!r}; allowed: answer_line, last_number, full")


def parse_number(text: str) -> float | None:
    """A finite number from ``text`` (integer, decimal, 1,234 or a/b), else ``None``."""
    value = normalise(text)
    fraction = _FRACTION.fullmatch(value)
    if fraction:
        denominator = int(fraction.group(2))
        return int(fraction.group(1)) / denominator if denominator else None
    if _NUMBER.fullmatch(value):
        value = _number_token(value)
    if "_" in value:  # float() accepts 1_000; a model's answer should not
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
