"""Built-in synthetic prompt families: n-digit addition and small add/subtract word problems.

Runs in: anywhere (pure). Everything is a deterministic function of the seed passed in (the
caller derives it from the run seed with ``spec.derive_seed``).

* ``addition``: ``a+b=`` with two n-digit operands; difficulty = n. With ``reversed_digits``
  the operands and the answer are written least-significant digit first, the format used in
  length-generalisation work on small transformers (Lee et al. 2023, "Teaching Arithmetic to
  Small Transformers"; Lee et al. 2025, "Self-Improving Transformers Overcome Easy-to-Hard and
  Length Generalization Challenges"), because it lets the model emit digits in carry order.
* ``word_problems``: one- and two-digit addition/subtraction in words, for an instruction
  model such as SmolLM2 (which answers ``12+7`` wrongly out of the box); difficulty = the
  number of digits of the larger operand (1 or 2). The reply must end with ``Answer: <n>``.

Train and eval never overlap: a problem's split is a pure function of its arithmetic content
(sha256 of ``a op b``), so every seed, round and family agrees on it, and the same sum worded
differently cannot leak from train into eval.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from dataflywheel.prompts import Prompt

Split = Literal["train", "eval"]

# A tenth of every problem space is held out. Changing this (or the salt) moves problems
# between splits, so both are versioned into every prompt's metadata.
EVAL_PERMILLE = 100
SPLIT_SALT = "dataflywheel.arithmetic.split.v1"
# Levels with at most this many problems are enumerated and sampled without replacement;
# larger ones are sampled at random and deduplicated.
ENUMERATE_LIMIT = 50_000

WORD_INSTRUCTION = "End your reply with a line of the form 'Answer: <number>'."
_NAMES = ("Tom", "Sara", "Ali", "Mei", "Lena", "Omar", "Ravi", "Zoe")
_ITEMS = ("apples", "marbles", "stickers", "books", "coins", "pencils", "shells", "cards")
_ADD_TEMPLATES = (
    "{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?",
    "There are {a} {item} in a box and {name} puts in {b} more. How many {item} are in the box?",
)
_SUB_TEMPLATES = (
    "{name} had {a} {item} and gave {b} of them away. How many {item} does {name} have left?",
    "There are {a} {item} on a table. {name} takes {b} of them. How many {item} are left?",
)


@dataclass(frozen=True)
class Problem:
    """One arithmetic fact: ``a op b``."""

    op: Literal["+", "-"]
    a: int
    b: int

    @property
    def key(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def result(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b


def split_of(problem: Problem) -> Split:
    """The split a problem belongs to, for every seed and family."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{problem.key}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") % 1000 < EVAL_PERMILLE else "train"


def _digit_range(n: int) -> range:
    return range(0, 10) if n == 1 else range(10 ** (n - 1), 10**n)


@dataclass(frozen=True)
class Family:
    """A problem family: its difficulty levels, problem space per level and rendering."""

    name: str
    min_level: int
    max_level: int
    level_size: Callable[[int], int]
    enumerate_level: Callable[[int], Iterator[Problem]]
    sample: Callable[[random.Random, int], Problem]
    render: Callable[[Problem, random.Random, bool], tuple[str, str]]


def _addition_size(n: int) -> int:
    return len(_digit_range(n)) ** 2


def _addition_all(n: int) -> Iterator[Problem]:
    digits = _digit_range(n)
    for a in digits:
        for b in digits:
            yield Problem("+", a, b)


def _addition_sample(rng: random.Random, n: int) -> Problem:
    digits = _digit_range(n)
    return Problem("+", rng.choice(digits), rng.choice(digits))


def _addition_render(
    problem: Problem, rng: random.Random, reversed_digits: bool
) -> tuple[str, str]:
    del rng  # one fixed template: the character-level model learns the format, not wording

    def fmt(x: int) -> str:
        return str(x)[::-1] if reversed_digits else str(x)

    return f"{fmt(problem.a)}+{fmt(problem.b)}=", fmt(problem.result)


def _word_all(n: int) -> Iterator[Problem]:
    top = 10 if n == 1 else 100
    for a in range(top):
        for b in range(top):
            if max(a, b) < 10 ** (n - 1) and n > 1:
                continue  # the larger operand must have exactly n digits
            yield Problem("+", a, b)
            if a >= b:  # answers stay non-negative
                yield Problem("-", a, b)


@lru_cache(maxsize=8)
def _word_size(n: int) -> int:
    return sum(1 for _ in _word_all(n))


def _word_sample(rng: random.Random, n: int) -> Problem:
    raise AssertionError("word-problem levels are small enough to enumerate")  # pragma: no cover


def _word_render(problem: Problem, rng: random.Random, reversed_digits: bool) -> tuple[str, str]:
    if reversed_digits:
        raise ValueError("reversed_digits applies to the addition family only")
    templates = _ADD_TEMPLATES if problem.op == "+" else _SUB_TEMPLATES
    story = rng.choice(templates).format(
        name=rng.choice(_NAMES), item=rng.choice(_ITEMS), a=problem.a, b=problem.b
    )
    return f"{story}\n{WORD_INSTRUCTION}", str(problem.result)


FAMILIES: dict[str, Family] = {
    "addition": Family(
        "addition", 1, 30, _addition_size, _addition_all, _addition_sample, _addition_render
    ),
    "word_problems": Family(
        "word_problems", 1, 2, _word_size, _word_all, _word_sample, _word_render
    ),
}


def _allocate(n: int, capacities: list[int], rng: random.Random) -> list[int]:
    """Spread n prompts evenly over levels, moving what a small level cannot hold elsewhere."""
    alloc = [0] * len(capacities)
    remaining = n
    open_levels = list(range(len(capacities)))
    while remaining > 0 and open_levels:
        share, extra = divmod(remaining, len(open_levels))
        bonus = set(rng.sample(open_levels, extra))
        for i in list(open_levels):
            take = min(share + (i in bonus), capacities[i] - alloc[i])
            alloc[i] += take
            remaining -= take
            if alloc[i] >= capacities[i]:
                open_levels.remove(i)
    return alloc


@lru_cache(maxsize=256)
def _pool(family: str, level: int, split: Split) -> tuple[Problem, ...]:
    """Every problem of a small level in one split (cached: the same for every call)."""
    return tuple(p for p in FAMILIES[family].enumerate_level(level) if split_of(p) == split)


def _capacity(family: Family, level: int, split: Split) -> int:
    if family.level_size(level) <= ENUMERATE_LIMIT:
        return len(_pool(family.name, level, split))
    # Large spaces: the hash split holds ~EVAL_PERMILLE/1000 of them; stay well under that.
    share = EVAL_PERMILLE if split == "eval" else 1000 - EVAL_PERMILLE
    return family.level_size(level) * share // 2000


def _problems(
    family: Family, level: int, split: Split, count: int, rng: random.Random
) -> list[Problem]:
    if count == 0:
        return []
    if family.level_size(level) <= ENUMERATE_LIMIT:
        return rng.sample(_pool(family.name, level, split), count)
    chosen: dict[str, Problem] = {}
    for _ in range(100 * count + 1000):
        problem = family.sample(rng, level)
        if split_of(problem) == split:
            chosen.setdefault(problem.key, problem)
            if len(chosen) == count:
                return list(chosen.values())
    raise RuntimeError(  # pragma: no cover - only with a broken split function
        f"could not draw {count} distinct {split} problems at level {level}"
    )


def generate(
    family: str,
    *,
    split: Split,
    n: int,
    seed: int,
    min_difficulty: int,
    max_difficulty: int,
    reversed_digits: bool = False,
) -> list[Prompt]:
    """``n`` distinct prompts of ``family`` in ``split``, spread over the difficulty band.

    Deterministic in all arguments. Raises ``ValueError`` when the band cannot hold ``n``
    distinct problems of that split (e.g. 1-digit addition has only ~90 train problems).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown prompt family {family!r}; allowed: {', '.join(FAMILIES)}")
    fam = FAMILIES[family]
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if not fam.min_level <= min_difficulty <= max_difficulty <= fam.max_level:
        raise ValueError(
            f"{family}: difficulty band {min_difficulty}-{max_difficulty} must lie within "
            f"{fam.min_level}-{fam.max_level} with min ≤ max"
        )
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    if reversed_digits and family != "addition":
        raise ValueError("reversed_digits applies to the addition family only")
    rng = random.Random(seed)
    levels = list(range(min_difficulty, max_difficulty + 1))
    capacities = [_capacity(fam, level, split) for level in levels]
    counts = _allocate(n, capacities, rng)
    if sum(counts) < n:
        raise ValueError(
            f"{family}: only {sum(capacities)} distinct {split} problems exist at difficulty "
            f"{min_difficulty}-{max_difficulty}; ask for at most that many or widen the band"
        )
    prompt_set = f"{family}_reversed" if reversed_digits else family
    prompts = []
    for level, count in zip(levels, counts, strict=True):
        for problem in _problems(fam, level, split, count, rng):
            text, answer = fam.render(problem, rng, reversed_digits)
            prompts.append(
                Prompt(
                    prompt_set=prompt_set,
                    split=split,
                    text=text,
                    reference={"answer": answer},
                    difficulty=level,
                    metadata={
                        "family": family,
                        "op": problem.op,
                        "a": problem.a,
                        "b": problem.b,
                        "reversed_digits": reversed_digits,
                        # The longest answer the problem can have; the majority-vote length
                        # filter measures answers against it without reading the label.
                        "expected_answer_length": level + 1,
                        "split_rule": f"{SPLIT_SALT}/{EVAL_PERMILLE}permille",
                    },
                )
            )
    rng.shuffle(prompts)
    return prompts
