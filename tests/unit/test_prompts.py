"""Prompts: identity hashes, the built-in arithmetic families and the JSONL loader.

Runs in: the test process (pure; files only under tmp_path).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from dataflywheel.prompts import Prompt
from dataflywheel.prompts.arithmetic import (
    EVAL_PERMILLE,
    Problem,
    generate,
    split_of,
)
from dataflywheel.prompts.jsonl import PromptFileError, load_jsonl
from dataflywheel.prompts.word_problems import WORD_INSTRUCTION

# --- Prompt identity -------------------------------------------------------------------------


def test_content_hash_is_sha256_of_canonical_json() -> None:
    prompt = Prompt("set", "train", "Zähle: 2+2=", {"answer": "4"}, None, 1, {"x": 1})
    canonical = json.dumps(
        {
            "prompt_set": "set",
            "split": "train",
            "text": "Zähle: 2+2=",
            "reference": {"answer": "4"},
            "tests": None,
            "difficulty": 1,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert prompt.content_hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert prompt.text_hash == hashlib.sha256("Zähle: 2+2=".encode()).hexdigest()


def test_hashes_separate_splits_but_text_hash_finds_them() -> None:
    train = Prompt("set", "train", "2+2=", {"answer": "4"})
    held_out = Prompt("set", "eval", "2+2=", {"answer": "4"})
    assert train.content_hash != held_out.content_hash
    assert train.text_hash == held_out.text_hash
    # metadata is not part of the identity
    assert Prompt("set", "train", "2+2=", {"answer": "4"}, metadata={"a": 1}).content_hash == (
        train.content_hash
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "  "}, "text"),
        ({"split": ""}, "split"),
        ({"difficulty": -1}, "difficulty"),
        ({"difficulty": True}, "difficulty"),
        ({"reference": "4"}, "reference"),
        ({"tests": 3}, "tests"),
    ],
)
def test_malformed_prompts_are_refused(kwargs: dict, message: str) -> None:
    fields = {"prompt_set": "s", "split": "train", "text": "q", **kwargs}
    with pytest.raises(ValueError, match=message):
        Prompt(**fields)


# --- arithmetic ------------------------------------------------------------------------------


def test_generation_is_deterministic_in_the_seed() -> None:
    args = {"split": "train", "n": 50, "min_difficulty": 2, "max_difficulty": 4}
    first = generate("addition", seed=11, **args)
    assert [p.content_hash for p in first] == [
        p.content_hash for p in generate("addition", seed=11, **args)
    ]
    assert {p.content_hash for p in first} != {
        p.content_hash for p in generate("addition", seed=12, **args)
    }


def test_addition_prompts_are_correct_distinct_and_in_band() -> None:
    prompts = generate("addition", split="train", n=300, seed=1, min_difficulty=1, max_difficulty=5)
    assert len({p.content_hash for p in prompts}) == 300
    assert {p.difficulty for p in prompts} == {1, 2, 3, 4, 5}
    for p in prompts:
        a, b, n = p.metadata["a"], p.metadata["b"], p.difficulty
        assert p.text == f"{a}+{b}=" and p.reference == {"answer": str(a + b)}
        assert len(str(a)) == len(str(b)) == n
        assert p.prompt_set == "addition" and p.split == "train"


def test_reversed_addition_reverses_operands_and_answer() -> None:
    prompts = generate(
        "addition",
        split="eval",
        n=40,
        seed=2,
        min_difficulty=3,
        max_difficulty=6,
        reversed_digits=True,
    )
    for p in prompts:
        a, b = p.metadata["a"], p.metadata["b"]
        assert p.text == f"{str(a)[::-1]}+{str(b)[::-1]}="
        assert p.reference == {"answer": str(a + b)[::-1]}
        assert p.prompt_set == "addition_reversed"
        assert p.metadata["expected_answer_length"] == p.difficulty + 1
    # concrete case: 120 + 385 = 505 -> "021+583=" answers "505"
    assert Problem("+", 120, 385).result == 505


def test_fixed_width_pads_operands_and_answer_and_weights_long_levels() -> None:
    prompts = generate(
        "addition",
        split="train",
        n=1600,
        seed=3,
        min_difficulty=1,
        max_difficulty=4,
        reversed_digits=True,
        fixed_width=4,
    )
    assert len({p.text for p in prompts}) == 1600
    for p in prompts:
        a, b = p.metadata["a"], p.metadata["b"]
        assert p.text == f"{str(a).zfill(4)[::-1]}+{str(b).zfill(4)[::-1]}="
        assert p.reference == {"answer": str(a + b).zfill(5)[::-1]}
        assert len(str(max(a, b))) == p.difficulty  # level = the longer operand's digits
        assert p.metadata["answer_width"] == 5 and p.prompt_set == "addition_reversed_w4"
    counts = Counter(p.difficulty for p in prompts)
    # 1:3:5:7 as for independent uniform digit counts (level 1 holds only ~90 problems).
    assert counts[4] > counts[3] > counts[2] > counts[1]
    assert abs(counts[4] / counts[2] - 7 / 3) < 0.3


def test_commuted_views_pose_each_fact_both_ways_in_one_vote_group() -> None:
    prompts = generate(
        "addition",
        split="train",
        n=300,
        seed=4,
        min_difficulty=1,
        max_difficulty=3,
        reversed_digits=True,
        fixed_width=3,
        commuted_views=True,
    )
    groups: dict[str, list] = {}
    for p in prompts:
        groups.setdefault(p.metadata["vote_group"], []).append(p)
    assert len(groups) == 300
    for views in groups.values():
        pairs = {(v.metadata["a"], v.metadata["b"]) for v in views}
        (a, b) = next(iter(pairs))
        assert pairs == {(a, b), (b, a)}  # one prompt when a == b
        assert len({v.reference["answer"] for v in views}) == 1
    # The split follows the fact, so no order of an eval fact is ever a training prompt.
    assert all(split_of(Problem("+", p.metadata["b"], p.metadata["a"])) == "train" for p in prompts)


def test_word_problems_are_correct_and_non_negative() -> None:
    prompts = generate(
        "word_problems", split="train", n=400, seed=3, min_difficulty=1, max_difficulty=2
    )
    ops = set()
    for p in prompts:
        a, b, op = p.metadata["a"], p.metadata["b"], p.metadata["op"]
        ops.add(op)
        result = a + b if op == "+" else a - b
        assert result >= 0 and p.reference == {"answer": str(result)}
        assert str(a) in p.text and str(b) in p.text and p.text.endswith(WORD_INSTRUCTION)
        assert p.difficulty == max(len(str(a)), len(str(b)))
    assert ops == {"+", "-"}


def test_train_and_eval_never_share_a_problem() -> None:
    def keys(split: str, seed: int, family: str = "addition") -> set[tuple[str, int, int]]:
        top = 2 if family == "word_problems" else 3
        return {
            (p.metadata["op"], p.metadata["a"], p.metadata["b"])
            for p in generate(
                family, split=split, n=80, seed=seed, min_difficulty=1, max_difficulty=top
            )
        }

    train = set().union(*(keys("train", seed) for seed in range(10)))
    held_out = set().union(*(keys("eval", seed) for seed in range(10)))
    assert train and held_out and not train & held_out
    words_train = set().union(*(keys("train", s, "word_problems") for s in range(5)))
    words_eval = set().union(*(keys("eval", s, "word_problems") for s in range(5)))
    assert not words_train & words_eval
    # the same arithmetic fact is in the same split whatever family words it
    assert all(split_of(Problem(*k)) == "eval" for k in words_eval | held_out)


def test_split_holds_out_about_the_configured_share() -> None:
    problems = [Problem("+", a, b) for a in range(100) for b in range(100)]
    share = sum(split_of(p) == "eval" for p in problems) / len(problems)
    assert abs(share - EVAL_PERMILLE / 1000) < 0.02


def test_small_levels_are_exhausted_then_others_fill_in() -> None:
    # 1-digit addition has 100 problems, ~90 of them train: 300 prompts over levels 1-2 must
    # take all it can from level 1 and the rest from level 2, with no duplicates.
    prompts = generate("addition", split="train", n=300, seed=4, min_difficulty=1, max_difficulty=2)
    level_one = [p for p in prompts if p.difficulty == 1]
    capacity = sum(split_of(Problem("+", a, b)) == "train" for a in range(10) for b in range(10))
    assert len(level_one) <= capacity and len(prompts) == 300
    assert len({p.content_hash for p in prompts}) == 300


def test_asking_for_more_than_exists_is_refused() -> None:
    with pytest.raises(ValueError, match="distinct eval problems exist"):
        generate("addition", split="eval", n=50, seed=0, min_difficulty=1, max_difficulty=1)


@pytest.mark.parametrize(
    ("family", "kwargs", "message"),
    [
        ("subtraction", {}, "unknown prompt family"),
        ("word_problems", {"max_difficulty": 4}, "difficulty band"),
        ("word_multiplication", {"max_difficulty": 5}, "difficulty band"),
        ("word_two_step", {"fixed_width": 3}, "fixed_width"),
        ("addition", {"min_difficulty": 3, "max_difficulty": 2}, "difficulty band"),
        ("word_problems", {"reversed_digits": True}, "reversed_digits"),
        ("addition", {"split": "test"}, "split must be"),
    ],
)
def test_bad_generation_arguments(family: str, kwargs: dict, message: str) -> None:
    args = {"split": "train", "n": 5, "seed": 0, "min_difficulty": 1, "max_difficulty": 1}
    with pytest.raises(ValueError, match=message):
        generate(family, **{**args, **kwargs})


# --- JSONL -----------------------------------------------------------------------------------


def _jsonl(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "math.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_fields_and_aliases(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path,
        '{"prompt": "2+2=", "answer": 4, "difficulty": 1}',
        "",
        '{"text": "capital of France?", "reference": {"answer": ["Paris", "paris"]}, '
        '"split": "eval", "metadata": {"src": "quiz"}}',
        '{"prompt": "def f(): ...", "tests": "assert f() is None"}',
    )
    prompts = load_jsonl(path)
    assert [p.prompt_set for p in prompts] == ["math"] * 3
    first, second, third = prompts
    assert first.reference == {"answer": "4"} and first.difficulty == 1 and first.split == "train"
    assert second.reference == {"answer": ["Paris", "paris"]} and second.split == "eval"
    assert second.metadata == {"src": "quiz"}
    assert third.reference is None and third.tests == "assert f() is None"
    assert [p.text for p in load_jsonl(path, split="eval")] == ["capital of France?"]
    assert load_jsonl(path, prompt_set="custom")[0].prompt_set == "custom"


@pytest.mark.parametrize(
    ("lines", "where", "message"),
    [
        (['{"prompt": "a"}', "{not json"], ":2:", "not valid JSON"),
        (['{"prompt": "a", "anwser": 1}'], ":1:", "unknown field(s) 'anwser'; allowed fields"),
        (['{"prompt": "a", "text": "b"}'], ":1:", "either 'prompt' or 'text'"),
        (['{"answer": "1"}'], ":1:", "field 'prompt'"),
        (['{"prompt": "a", "difficulty": "hard"}'], ":1:", "field 'difficulty'"),
        (['{"prompt": "a", "answer": [1]}'], ":1:", "field 'answer'"),
        (['{"prompt": "a", "answer": 1, "reference": "1"}'], ":1:", "not both"),
        (['{"prompt": "a", "metadata": 3}'], ":1:", "field 'metadata'"),
        (['{"prompt": "a", "split": ""}'], ":1:", "field 'split'"),
        (["[1, 2]"], ":1:", "JSON object"),
        (
            ['{"prompt": "a", "answer": 1}', '{"prompt": "b"}', '{"prompt": "a", "answer": 1}'],
            ":3:",
            "duplicate of line 1",
        ),
    ],
)
def test_jsonl_errors_name_file_line_and_field(
    tmp_path: Path, lines: list[str], where: str, message: str
) -> None:
    path = _jsonl(tmp_path, *lines)
    with pytest.raises(PromptFileError) as caught:
        load_jsonl(path)
    assert f"{path}{where}" in str(caught.value)
    assert message in str(caught.value)


def test_jsonl_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match="not found"):
        load_jsonl(tmp_path / "absent.jsonl")
    with pytest.raises(PromptFileError, match="no prompts"):
        load_jsonl(_jsonl(tmp_path, ""))
