"""The word-problem families: 3-digit add/subtract, multiplication and two-step stories, each
with difficulty levels (``prompts/word_problems.py``), drawn through ``generate``.

Runs in: the test process (pure).
"""

from __future__ import annotations

import re

import pytest

from dataflywheel.prompts.arithmetic import generate, level_capacity
from dataflywheel.prompts.problems import Problem, split_of
from dataflywheel.prompts.word_problems import MULTIPLICATION_DIGITS, WORD_INSTRUCTION
from dataflywheel.spec import BuiltinPromptsSpec


def _numbers(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


def _digits(x: int) -> int:
    return len(str(x))


def test_three_digit_level_is_sampled_distinct_correct_and_in_its_split() -> None:
    # Level 3 has ~1.5 million problems: drawn at random, not enumerated.
    assert level_capacity("word_problems", 3, "train") > 100_000
    prompts = generate(
        "word_problems", split="train", n=300, seed=5, min_difficulty=3, max_difficulty=3
    )
    assert len({(p.metadata["op"], p.metadata["a"], p.metadata["b"]) for p in prompts}) == 300
    ops = set()
    for p in prompts:
        a, b, op = p.metadata["a"], p.metadata["b"], p.metadata["op"]
        ops.add(op)
        assert p.difficulty == 3 and max(_digits(a), _digits(b)) == 3
        result = a + b if op == "+" else a - b
        assert result >= 0 and p.reference == {"answer": str(result)}
        assert _numbers(p.text.split("\n")[0]) == [a, b] and p.text.endswith(WORD_INSTRUCTION)
        assert split_of(Problem(op, a, b)) == "train"
    assert ops == {"+", "-"}


def test_multiplication_levels_have_their_factor_digits_and_right_answers() -> None:
    prompts = generate(
        "word_multiplication", split="train", n=400, seed=2, min_difficulty=1, max_difficulty=4
    )
    assert {p.difficulty for p in prompts} == {1, 2, 3, 4}
    for p in prompts:
        a, b = p.metadata["a"], p.metadata["b"]
        assert p.metadata["op"] == "*" and a > 0 and b > 0
        assert sorted((_digits(a), _digits(b))) == sorted(MULTIPLICATION_DIGITS[p.difficulty])
        assert p.reference == {"answer": str(a * b)}
        assert _numbers(p.text.split("\n")[0]) == [a, b]
        # The length filter's bound holds for every answer of the level.
        assert len(p.reference["answer"]) <= p.metadata["expected_answer_length"]
        assert p.metadata["expected_answer_length"] == sum(MULTIPLICATION_DIGITS[p.difficulty])


def test_two_step_problems_never_go_negative_and_name_both_steps() -> None:
    prompts = generate(
        "word_two_step", split="train", n=600, seed=9, min_difficulty=1, max_difficulty=3
    )
    shapes = set()
    for p in prompts:
        m = p.metadata
        a, b, c = m["a"], m["b"], m["c"]
        shapes.add(m["op"] + m["op2"])
        first = a + b if m["op"] == "+" else a - b
        result = first - c if m["op2"] == "-" else first + c
        assert first >= 0 and result >= 0 and p.reference == {"answer": str(result)}
        assert max(_digits(a), _digits(b), _digits(c)) == p.difficulty
        assert _numbers(p.text.split("\n")[0]) == [a, b, c]
        assert split_of(Problem(m["op"], a, b, m["op2"], c)) == "train"
    assert shapes == {"+-", "-+"}
    assert {p.difficulty for p in prompts} == {1, 2, 3}


@pytest.mark.parametrize(
    ("family", "top"), [("word_problems", 3), ("word_multiplication", 4), ("word_two_step", 3)]
)
def test_train_and_eval_are_disjoint_and_draws_are_deterministic(family: str, top: int) -> None:
    def facts(split: str, seed: int) -> set[str]:
        drawn = generate(family, split=split, n=60, seed=seed, min_difficulty=1, max_difficulty=top)
        return {
            Problem(
                p.metadata["op"],
                p.metadata["a"],
                p.metadata["b"],
                p.metadata.get("op2"),
                p.metadata.get("c"),
            ).fact
            for p in drawn
        }

    train = set().union(*(facts("train", s) for s in range(4)))
    held_out = set().union(*(facts("eval", s) for s in range(4)))
    assert train and held_out and not train & held_out
    assert generate(family, split="train", n=30, seed=1, min_difficulty=1, max_difficulty=top) == (
        generate(family, split="train", n=30, seed=1, min_difficulty=1, max_difficulty=top)
    )


def test_a_product_is_one_fact_in_either_order() -> None:
    assert Problem("*", 3, 17).fact == Problem("*", 17, 3).fact
    assert split_of(Problem("*", 3, 17)) == split_of(Problem("*", 17, 3))
    assert Problem("*", 3, 17).commuted() == Problem("*", 17, 3)
    # A two-step problem is its own fact; its result is read left to right.
    two = Problem("-", 9, 4, "+", 7)
    assert two.fact == two.key == "9-4+7" and two.result == 12 and two.commuted() == two


def test_the_spec_takes_the_new_families_and_names_the_field_past_their_top() -> None:
    spec = BuiltinPromptsSpec(family="word_two_step", min_difficulty=1, max_difficulty=3)
    assert spec.family == "word_two_step"
    with pytest.raises(ValueError, match="max_difficulty: word_multiplication goes up to 4"):
        BuiltinPromptsSpec(family="word_multiplication", max_difficulty=5)
