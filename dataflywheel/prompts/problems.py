"""What every built-in arithmetic family shares: a problem, its train/eval split, the
family record, and how digits are laid out.

Runs in: anywhere (pure). ``prompts/arithmetic.py`` draws prompts from the families;
``prompts/word_problems.py`` defines the word-problem families.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

Split = Literal["train", "eval"]

# A tenth of every problem space is held out. Changing this (or the salt) moves problems
# between splits, so both are versioned into every prompt's metadata.
EVAL_PERMILLE = 100
SPLIT_SALT = "dataflywheel.arithmetic.split.v2"
# Levels with at most this many problems are enumerated and sampled without replacement;
# larger ones are sampled at random and deduplicated.
ENUMERATE_LIMIT = 50_000

_COMMUTATIVE = ("+", "*")


@dataclass(frozen=True)
class Problem:
    """One arithmetic fact: ``a op b``, or ``(a op b) op2 c`` for a two-step problem."""

    op: Literal["+", "-", "*"]
    a: int
    b: int
    op2: Literal["+", "-"] | None = None
    c: int | None = None

    @property
    def key(self) -> str:
        first = f"{self.a}{self.op}{self.b}"
        return first if self.op2 is None else f"{first}{self.op2}{self.c}"

    @property
    def fact(self) -> str:
        """The fact regardless of how it is posed: ``3+5`` and ``5+3`` are one fact (and
        ``3*5``, ``5*3``); a two-step problem is its own fact."""
        if self.op in _COMMUTATIVE and self.op2 is None:
            return f"{min(self.a, self.b)}{self.op}{max(self.a, self.b)}"
        return self.key

    def canonical(self) -> Problem:
        if self.op in _COMMUTATIVE and self.op2 is None:
            return Problem(self.op, min(self.a, self.b), max(self.a, self.b))
        return self

    def commuted(self) -> Problem:
        if self.op in _COMMUTATIVE and self.op2 is None:
            return Problem(self.op, self.b, self.a)
        return self

    @property
    def result(self) -> int:
        if self.op == "+":
            first = self.a + self.b
        elif self.op == "-":
            first = self.a - self.b
        else:
            first = self.a * self.b
        if self.op2 is None or self.c is None:
            return first
        return first + self.c if self.op2 == "+" else first - self.c


def split_of(problem: Problem) -> Split:
    """The split a problem belongs to, for every seed, family and operand order (v2: by
    fact, so ``5+3`` cannot train a model that is evaluated on ``3+5``)."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{problem.fact}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") % 1000 < EVAL_PERMILLE else "train"


def digit_range(n: int) -> range:
    """The numbers with exactly ``n`` digits (0-9 for one digit)."""
    return range(0, 10) if n == 1 else range(10 ** (n - 1), 10**n)


@dataclass(frozen=True)
class Layout:
    """How a problem is written: digit order and zero padding (addition only)."""

    reversed_digits: bool = False
    fixed_width: int | None = None

    def number(self, x: int, width: int | None) -> str:
        text = str(x).zfill(width) if width else str(x)
        return text[::-1] if self.reversed_digits else text


@dataclass(frozen=True)
class Family:
    """A problem family: its difficulty levels, problem space per level and rendering.
    ``answer_digits`` is the most digits an answer has at a level (default: level + 1)."""

    name: str
    min_level: int
    max_level: int
    level_size: Callable[[int], int]
    enumerate_level: Callable[[int], Iterator[Problem]]
    sample: Callable[[random.Random, int], Problem]
    render: Callable[[Problem, random.Random, Layout], tuple[str, str]]
    answer_digits: Callable[[int], int] | None = None

    def longest_answer(self, level: int) -> int:
        return self.answer_digits(level) if self.answer_digits else level + 1
