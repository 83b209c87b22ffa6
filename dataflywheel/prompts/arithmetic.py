"""Built-in synthetic prompt families: n-digit addition, and drawing prompts from every family.

Runs in: anywhere (pure). Everything is a deterministic function of the seed passed in (the
caller derives it from the run seed with ``spec.derive_seed``).

* ``addition``: ``a+b=`` with two n-digit operands; difficulty = n. With ``reversed_digits``
  the operands and the answer are written least-significant digit first, the format used in
  length-generalisation work on small transformers (Lee et al. 2023, "Teaching Arithmetic to
  Small Transformers"; Lee et al. 2025, "Self-Improving Transformers Overcome Easy-to-Hard and
  Length Generalization Challenges"), because it lets the model emit digits in carry order.
  With ``fixed_width=W`` every operand is zero-padded to W digits and the answer to W+1
  (``123+45`` reversed → ``3210+5400=86100``), each operand's digit count is drawn on its own
  (level n = the longer operand has n digits), and every sequence has the same length. In
  this format a 2-layer model learns the carry algorithm from a few hundred labels instead of
  memorising them (docs/results.md).
* The word-problem families (``word_problems``, ``word_multiplication``, ``word_two_step``;
  ``prompts/word_problems.py``), for an instruction model such as SmolLM2 (which answers
  ``12+7`` wrongly out of the box). The reply must end with ``Answer: <n>``.

Train and eval never overlap: a problem's split is a pure function of its arithmetic content
(sha256 of ``a op b``), so every seed, round and family agrees on it, and the same sum worded
differently cannot leak from train into eval.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import lru_cache

from dataflywheel.prompts import Prompt
from dataflywheel.prompts.problems import (
    ENUMERATE_LIMIT,
    EVAL_PERMILLE,
    SPLIT_SALT,
    Family,
    Layout,
    Problem,
    Split,
    digit_range,
    split_of,
)
from dataflywheel.prompts.word_problems import WORD_FAMILIES


def _addition_size(n: int) -> int:
    return len(digit_range(n)) ** 2


def _addition_all(n: int) -> Iterator[Problem]:
    digits = digit_range(n)
    for a in digits:
        for b in digits:
            yield Problem("+", a, b)


def _addition_sample(rng: random.Random, n: int) -> Problem:
    digits = digit_range(n)
    return Problem("+", rng.choice(digits), rng.choice(digits))


def _addition_render(problem: Problem, rng: random.Random, layout: Layout) -> tuple[str, str]:
    del rng  # one fixed template: the character-level model learns the format, not wording
    width = layout.fixed_width
    answer_width = width + 1 if width else None
    text = f"{layout.number(problem.a, width)}+{layout.number(problem.b, width)}="
    return text, layout.number(problem.result, answer_width)


def _padded_size(n: int) -> int:
    """Pairs whose longer operand has exactly n digits."""
    return (10**n) ** 2 - (10 ** (n - 1)) ** 2 if n > 1 else 100


def _padded_all(n: int) -> Iterator[Problem]:
    top, low = 10**n, (10 ** (n - 1) if n > 1 else 0)
    for a in range(top):
        for b in range(top):
            if max(a, b) >= low:
                yield Problem("+", a, b)


def _padded_sample(rng: random.Random, n: int) -> Problem:
    # Each operand's digit count is drawn on its own (the longer one has n digits), so short
    # operands next to long ones — the cases zero padding exists for — are common.
    long, short = rng.choice(digit_range(n)), rng.choice(digit_range(rng.randint(1, n)))
    return Problem("+", long, short) if rng.random() < 0.5 else Problem("+", short, long)


FAMILIES: dict[str, Family] = {
    "addition": Family(
        "addition", 1, 30, _addition_size, _addition_all, _addition_sample, _addition_render
    ),
    **WORD_FAMILIES,
}
# ``addition`` written with fixed_width: the same facts, another problem space per level.
FIXED_WIDTH_ADDITION = Family(
    "addition_fixed_width", 1, 30, _padded_size, _padded_all, _padded_sample, _addition_render
)
_BY_NAME = {**FAMILIES, FIXED_WIDTH_ADDITION.name: FIXED_WIDTH_ADDITION}


def _allocate(
    n: int, capacities: list[int], rng: random.Random, weights: list[int] | None = None
) -> list[int]:
    """Spread n prompts over levels in proportion to ``weights`` (default: evenly), moving
    what a small level cannot hold elsewhere."""
    weights = weights or [1] * len(capacities)
    alloc = [0] * len(capacities)
    remaining = n
    open_levels = list(range(len(capacities)))
    while remaining > 0 and open_levels:
        total = sum(weights[i] for i in open_levels)
        quotas = {i: remaining * weights[i] // total for i in open_levels}
        extra = remaining - sum(quotas.values())
        for i in rng.sample(open_levels, extra):
            quotas[i] += 1
        for i in list(open_levels):
            take = min(quotas[i], capacities[i] - alloc[i])
            alloc[i] += take
            remaining -= take
            if alloc[i] >= capacities[i]:
                open_levels.remove(i)
    return alloc


@lru_cache(maxsize=256)
def _pool(family: str, level: int, split: Split, by_fact: bool) -> tuple[Problem, ...]:
    """Every problem of a small level in one split (cached: the same for every call); with
    ``by_fact`` one problem per fact (its canonical order)."""
    problems = (p for p in _BY_NAME[family].enumerate_level(level) if split_of(p) == split)
    if by_fact:
        return tuple(dict.fromkeys(p.canonical() for p in problems))
    return tuple(problems)


def _capacity(family: Family, level: int, split: Split, by_fact: bool) -> int:
    if family.level_size(level) <= ENUMERATE_LIMIT:
        return len(_pool(family.name, level, split, by_fact))
    # Large spaces: the hash split holds ~EVAL_PERMILLE/1000 of them; stay well under that.
    share = EVAL_PERMILLE if split == "eval" else 1000 - EVAL_PERMILLE
    return family.level_size(level) * share // (4000 if by_fact else 2000)


def longest_addition(level: int, fixed_width: int | None = None) -> tuple[int, int]:
    """Characters of the longest ``addition`` prompt and answer at ``level`` (``a+b=`` with
    ``level``-digit operands, or operands padded to ``fixed_width``): what a character-level
    model's context must hold at that level."""
    width = max(level, fixed_width or 0)
    return 2 * width + 2, width + 1


def level_capacity(
    family: str, level: int, split: Split, fixed_width: int | None = None, by_fact: bool = False
) -> int:
    """How many distinct ``split`` problems :func:`generate` can draw at one ``level``."""
    fam = FIXED_WIDTH_ADDITION if fixed_width is not None else FAMILIES[family]
    return _capacity(fam, level, split, by_fact)


def _problems(
    family: Family, level: int, split: Split, count: int, rng: random.Random, by_fact: bool
) -> list[Problem]:
    if count == 0:
        return []
    if family.level_size(level) <= ENUMERATE_LIMIT:
        return rng.sample(_pool(family.name, level, split, by_fact), count)
    chosen: dict[str, Problem] = {}
    for _ in range(100 * count + 1000):
        problem = family.sample(rng, level)
        if by_fact:
            problem = problem.canonical()
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
    fixed_width: int | None = None,
    commuted_views: bool = False,
) -> list[Prompt]:
    """``n`` distinct prompts of ``family`` in ``split``, spread over the difficulty band.

    With ``fixed_width`` (addition only) the levels get prompts in proportion to how often
    the longer of two operands with independent, uniform digit counts has that many digits
    (2k+1 : ..., counted from the band's lowest level). With ``commuted_views`` (addition
    only) ``n`` distinct facts are drawn and each is posed both ways, ``a+b`` and ``b+a``
    (one prompt when a = b), the views sharing a ``vote_group``. Deterministic in all
    arguments. Raises ``ValueError`` when the band cannot hold ``n`` distinct problems of
    that split (e.g. 1-digit addition has only ~90 train problems).
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
    if (reversed_digits or fixed_width or commuted_views) and family != "addition":
        raise ValueError(
            "reversed_digits, fixed_width and commuted_views apply to the addition family only"
        )
    if fixed_width is not None and fixed_width < max_difficulty:
        raise ValueError(
            f"fixed_width ({fixed_width}) must be at least max_difficulty ({max_difficulty})"
        )
    layout = Layout(reversed_digits, fixed_width)
    if fixed_width is not None:
        fam = FIXED_WIDTH_ADDITION
    rng = random.Random(seed)
    levels = list(range(min_difficulty, max_difficulty + 1))
    capacities = [_capacity(fam, level, split, commuted_views) for level in levels]
    weights = [2 * (lv - min_difficulty) + 1 for lv in levels] if fixed_width else None
    counts = _allocate(n, capacities, rng, weights)
    if sum(counts) < n:
        raise ValueError(
            f"{family}: only {sum(capacities)} distinct {split} problems exist at difficulty "
            f"{min_difficulty}-{max_difficulty}; ask for at most that many or widen the band"
        )
    prompt_set = family + ("_reversed" if reversed_digits else "")
    prompt_set += f"_w{fixed_width}" if fixed_width else ""
    prompts = []
    for level, count in zip(levels, counts, strict=True):
        for drawn in _problems(fam, level, split, count, rng, commuted_views):
            views = dict.fromkeys([drawn, drawn.commuted()] if commuted_views else [drawn])
            for problem in views:
                text, answer = fam.render(problem, rng, layout)
                metadata = {
                    "family": family,
                    "op": problem.op,
                    "a": problem.a,
                    "b": problem.b,
                    **({"op2": problem.op2, "c": problem.c} if problem.op2 else {}),
                    "reversed_digits": reversed_digits,
                    # The longest answer the problem can have; the majority-vote length
                    # filter measures answers against it without reading the label.
                    "expected_answer_length": fam.longest_answer(level),
                    "split_rule": f"{SPLIT_SALT}/{EVAL_PERMILLE}permille",
                }
                if fixed_width:
                    metadata["answer_width"] = fixed_width + 1
                if commuted_views:
                    metadata["vote_group"] = f"{family}:{problem.fact}"
                prompts.append(
                    Prompt(
                        prompt_set=prompt_set,
                        split=split,
                        text=text,
                        reference={"answer": answer},
                        difficulty=level,
                        metadata=metadata,
                    )
                )
    rng.shuffle(prompts)
    return prompts
