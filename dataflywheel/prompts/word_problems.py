"""The word-problem families, for an instruction model such as SmolLM2: every reply must
end with ``Answer: <n>``.

Runs in: anywhere (pure); ``prompts/arithmetic.py`` draws prompts from these families.

* ``word_problems``: addition/subtraction in words; level = digits of the larger operand
  (1-3). Levels 1 and 2 are enumerated; level 3 (~1.5 million problems) is sampled.
* ``word_multiplication``: "n bags of m items"; level 1 = one digit by one digit, 2 = two
  digits by one, 3 = three digits by one, 4 = two digits by two. Factors are never 0.
* ``word_two_step``: two steps in one story, ``a + b - c`` or ``a - b + c`` with every
  intermediate count non-negative; level = digits of the largest operand (1-3).

A fact's split is the same in every family that words it (``problems.split_of``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import lru_cache

from dataflywheel.prompts.problems import Family, Layout, Problem, digit_range

WORD_INSTRUCTION = "End your reply with a line of the form 'Answer: <number>'."
_NAMES = ("Tom", "Sara", "Ali", "Mei", "Lena", "Omar", "Ravi", "Zoe")
_ITEMS = ("apples", "marbles", "stickers", "books", "coins", "pencils", "shells", "cards")
_TEMPLATES = {
    "+": (
        "{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?",
        "There are {a} {item} in a box and {name} puts in {b} more. How many {item} are in "
        "the box?",
    ),
    "-": (
        "{name} had {a} {item} and gave {b} of them away. How many {item} does {name} have left?",
        "There are {a} {item} on a table. {name} takes {b} of them. How many {item} are left?",
    ),
    "*": (
        "{name} has {a} bags with {b} {item} in each bag. How many {item} does {name} have?",
        "There are {a} rows of {item} with {b} {item} in each row. How many {item} are there?",
    ),
    "+-": (
        "{name} has {a} {item}. {name} gets {b} more {item}, then gives {c} of them away. "
        "How many {item} does {name} have now?",
    ),
    "-+": (
        "{name} had {a} {item} and gave {b} of them away. Then {name} found {c} more {item}. "
        "How many {item} does {name} have now?",
    ),
}


def _render(problem: Problem, rng: random.Random, layout: Layout) -> tuple[str, str]:
    if layout != Layout():
        raise ValueError("reversed_digits and fixed_width apply to the addition family only")
    templates = _TEMPLATES[problem.op + (problem.op2 or "")]
    story = rng.choice(templates).format(
        name=rng.choice(_NAMES), item=rng.choice(_ITEMS), a=problem.a, b=problem.b, c=problem.c
    )
    return f"{story}\n{WORD_INSTRUCTION}", str(problem.result)


# --- word_problems: a + b, a - b -------------------------------------------------------


def _add_sub_all(n: int) -> Iterator[Problem]:
    top = 10**n
    for a in range(top):
        for b in range(top):
            if max(a, b) < 10 ** (n - 1) and n > 1:
                continue  # the larger operand must have exactly n digits
            yield Problem("+", a, b)
            if a >= b:  # answers stay non-negative
                yield Problem("-", a, b)


@lru_cache(maxsize=8)
def _add_sub_size(n: int) -> int:
    if n <= 2:
        return sum(1 for _ in _add_sub_all(n))
    low, top = 10 ** (n - 1), 10**n
    additions = top**2 - low**2  # ordered pairs whose larger operand has n digits
    subtractions = sum(a + 1 for a in range(low, top))  # a has n digits, 0 <= b <= a
    return additions + subtractions


def _add_sub_sample(rng: random.Random, n: int) -> Problem:
    a, b = rng.choice(digit_range(n)), rng.randrange(10**n)
    if rng.random() < 0.5:
        return Problem("+", a, b) if rng.random() < 0.5 else Problem("+", b, a)
    return Problem("-", max(a, b), min(a, b))


# --- word_multiplication: a * b ---------------------------------------------------------

# Digits of the two factors at each level.
MULTIPLICATION_DIGITS = {1: (1, 1), 2: (2, 1), 3: (3, 1), 4: (2, 2)}


def _factors(n: int) -> range:
    return range(1, 10) if n == 1 else digit_range(n)


def _mul_all(level: int) -> Iterator[Problem]:
    da, db = MULTIPLICATION_DIGITS[level]
    for a in _factors(da):
        for b in _factors(db):
            yield Problem("*", a, b)
            if da != db:
                yield Problem("*", b, a)


@lru_cache(maxsize=8)
def _mul_size(level: int) -> int:
    return sum(1 for _ in _mul_all(level))


def _never_sampled(rng: random.Random, level: int) -> Problem:
    raise AssertionError("these levels are small enough to enumerate")  # pragma: no cover


# --- word_two_step: a + b - c, a - b + c -------------------------------------------------


def _two_step_valid(a: int, b: int, c: int) -> Iterator[Problem]:
    if a + b >= c:
        yield Problem("+", a, b, "-", c)
    if a >= b:
        yield Problem("-", a, b, "+", c)


def _two_step_all(n: int) -> Iterator[Problem]:
    top = 10**n
    for a in range(top):
        for b in range(top):
            for c in range(top):
                if n == 1 or max(a, b, c) >= 10 ** (n - 1):
                    yield from _two_step_valid(a, b, c)


@lru_cache(maxsize=8)
def _two_step_size(n: int) -> int:
    if n == 1:
        return sum(1 for _ in _two_step_all(n))
    # A lower bound (each triple whose largest operand has n digits is valid at least once):
    # enough to size the sampled levels.
    return (10**n) ** 3 - (10 ** (n - 1)) ** 3


def _two_step_sample(rng: random.Random, n: int) -> Problem:
    while True:
        operands = [rng.choice(digit_range(n)), rng.randrange(10**n), rng.randrange(10**n)]
        rng.shuffle(operands)
        options = list(_two_step_valid(*operands))
        if options:
            return rng.choice(options)


WORD_FAMILIES: dict[str, Family] = {
    "word_problems": Family(
        "word_problems", 1, 3, _add_sub_size, _add_sub_all, _add_sub_sample, _render
    ),
    "word_multiplication": Family(
        "word_multiplication",
        1,
        4,
        _mul_size,
        _mul_all,
        _never_sampled,
        _render,
        answer_digits=lambda level: sum(MULTIPLICATION_DIGITS[level]),
    ),
    "word_two_step": Family(
        "word_two_step", 1, 3, _two_step_size, _two_step_all, _two_step_sample, _render
    ),
}
