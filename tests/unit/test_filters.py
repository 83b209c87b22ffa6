"""Data filters: each step keeps and removes exactly what it claims, and they compose.

Runs in: the test process (pure).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dataflywheel.recipes import (
    PreferencePair,
    SelectionResult,
    SelectionStats,
    SftRow,
)
from dataflywheel.recipes import filters as f
from dataflywheel.spec import RunSpec, format_errors

PROMPTS = {1: "Write a function that adds two numbers.", 2: "Reverse a string.", 3: "12+34="}
CONTEXT = f.FilterContext(prompt_texts=PROMPTS)


def _rows(*items: tuple[int, str]) -> list[SftRow]:
    return [SftRow(pid, i, text) for i, (pid, text) in enumerate(items)]


def test_dedup_removes_exact_and_near_duplicates_within_a_prompt() -> None:
    body = "def add(a, b):\n    result = a + b\n    return result\n"
    rows = _rows(
        (1, body),
        (1, body.upper()),  # exact after normalisation (case, whitespace)
        (1, body.replace("result", "total")),  # a light edit: near duplicate
        (1, "lambda a, b: sum([a, b])  # something else entirely"),
        (2, body),  # the same text for another prompt is not a duplicate (scope: prompt)
    )
    kept, step = f.dedup(rows, f.DedupFilterConfig(threshold=0.5), CONTEXT)
    assert [r.sample_id for r in kept] == [0, 3, 4]
    assert step.removed == {"exact": 1, "near": 1}
    exact_only, step = f.dedup(rows, f.DedupFilterConfig(near=False), CONTEXT)
    assert [r.sample_id for r in exact_only] == [0, 2, 3, 4] and step.removed["near"] == 0
    # scope: dataset compares across prompts, the prompt text included.
    across, _ = f.dedup(rows, f.DedupFilterConfig(scope="dataset", near=False), CONTEXT)
    assert [r.sample_id for r in across] == [0, 2, 3, 4]
    # ... so a loose near-duplicate threshold also catches the same body under another prompt.
    across, _ = f.dedup(rows, f.DedupFilterConfig(scope="dataset", threshold=0.5), CONTEXT)
    assert [r.sample_id for r in across] == [0, 3]
    same_prompt = f.FilterContext(prompt_texts={1: "x", 2: "x"})
    across, _ = f.dedup(rows, f.DedupFilterConfig(scope="dataset", near=False), same_prompt)
    assert [r.sample_id for r in across] == [0, 2, 3]


def test_dedup_is_deterministic_and_order_based() -> None:
    rows = _rows(*[(1, f"answer number {i % 3} with some padding text") for i in range(9)])
    first, _ = f.dedup(rows, f.DedupFilterConfig(), CONTEXT)
    second, _ = f.dedup(rows, f.DedupFilterConfig(), CONTEXT)
    assert first == second and len(first) == 3 and [r.sample_id for r in first] == [0, 1, 2]


def test_decontaminate_is_a_gate_on_prompt_and_completion() -> None:
    eval_text = (
        "Write a python function that returns the sum of the squares of every odd number in "
        "the list"
    )
    context = f.FilterContext(
        prompt_texts={**PROMPTS, 4: eval_text.upper() + " please"},
        eval_texts=[eval_text, "12+34="],
    )
    rows = _rows(
        (1, "def add(a, b): return a + b"),
        (2, "Here: " + eval_text),  # the completion repeats an eval prompt
        (3, "46"),  # the prompt is a (short) eval prompt verbatim
        (4, "ok"),  # the prompt contains an eval 13-gram (case-insensitive)
        (1, "returns the sum of the squares"),  # a shorter overlap is not contamination
    )
    kept, step = f.decontaminate(rows, f.DecontaminateFilterConfig(), context)
    assert [r.sample_id for r in kept] == [0, 4]
    assert step.removed == {"contaminated": 3} and (step.rows_in, step.rows_out) == (5, 2)
    kept, _ = f.decontaminate(rows, f.DecontaminateFilterConfig(n=5), context)
    assert [r.sample_id for r in kept] == [0]


def test_length_and_format_filters_check_both_sides_of_a_pair() -> None:
    pairs = [
        PreferencePair(1, 10, 11, "def f():\n    return 1", "def f(:", 1.0, 0.0),
        PreferencePair(2, 12, 13, "return s[::-1]", "x" * 500, 1.0, 0.0),
    ]
    kept, step = f.length(pairs, f.LengthFilterConfig(max=100), CONTEXT)
    assert [p.chosen_sample_id for p in kept] == [10] and step.removed["too_long"] == 1
    kept, step = f.format_(pairs, f.FormatFilterConfig(python_syntax=True), CONTEXT)
    assert kept == [] and step.removed == {"no_match": 0, "syntax": 2}
    # A function body continuing its prompt parses together with the prompt.
    body = [SftRow(5, 1, "    return a + b\n")]
    ctx = f.FilterContext(prompt_texts={5: "def add(a, b):\n    '''Add.'''\n"})
    assert f.format_(body, f.FormatFilterConfig(python_syntax=True), ctx)[0] == body
    kept, step = f.format_(
        _rows((3, "46"), (3, "forty six")), f.FormatFilterConfig(pattern=r"^\d+$"), CONTEXT
    )
    assert [r.text for r in kept] == ["46"] and step.removed["no_match"] == 1
    kept, step = f.length(
        _rows((3, "1"), (3, "46 and 7")), f.LengthFilterConfig(min=2, max=2, unit="words"), CONTEXT
    )
    assert kept == [] and step.removed == {"too_short": 1, "too_long": 1}


def test_apply_filters_composes_and_reports_yield_and_diversity() -> None:
    rows = _rows((3, "46"), (3, "46"), (3, "4 6"), (1, "x" * 50), (2, "gnirts"))
    result = SelectionResult(
        tuple(rows), SelectionStats("rejection_sampling", 10, 5, {"passed": 5}, {"a": 1})
    )
    context = f.FilterContext(prompt_texts=PROMPTS, eval_texts=["Reverse a string."])
    configs = [
        f.DedupFilterConfig(near=False),
        f.DecontaminateFilterConfig(),
        f.LengthFilterConfig(max=10),
    ]
    out = f.apply_filters(result, configs, context)
    assert [r.text for r in out.rows] == ["46", "4 6"]
    stats = out.stats.as_dict()
    assert (stats["seen"], stats["kept"], stats["recipe_kept"]) == (10, 2, 5)
    assert stats["yield"] == pytest.approx(0.2) and stats["a"] == 1
    assert [(s["filter"], s["in"], s["out"]) for s in stats["filters"]] == [
        ("dedup", 5, 4),
        ("decontaminate", 4, 3),
        ("length", 3, 2),
    ]
    assert stats["filters"][0]["yield"] == pytest.approx(0.8)
    assert stats["contaminated"] == 1
    # "46" and "4 6": tokens 46, 4, 6 all distinct; one bigram ("4", "6").
    assert stats["diversity"] == {
        "rows": 2,
        "unique_texts": 2,
        "distinct_1": 1.0,
        "distinct_2": 1.0,
    }
    # No filters: the rows pass through and the health numbers are still there.
    plain = f.apply_filters(result, [], context)
    assert plain.rows == result.rows and plain.stats.details["filters"] == []
    assert plain.stats.details["diversity"]["distinct_1"] == pytest.approx(5 / 6)


BASE: dict[str, Any] = {
    "model": {"source": "smollm2"},
    "prompts": {"kind": "builtin", "family": "word_problems"},
}


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ([{"kind": "minhash"}], "selection.filters[0].kind: must be one of"),
        ([{"kind": "length"}], "selection.filters[0].min: set min, max or both"),
        ([{"kind": "length", "min": 5, "max": 2}], "selection.filters[0].min: must be ≤ max"),
        ([{"kind": "format", "pattern": "("}], "selection.filters[0].pattern: not a valid"),
        ([{"kind": "dedup", "threshold": 0}], "selection.filters[0].threshold: must be > 0"),
    ],
)
def test_spec_filters_are_typed(filters: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate(
            {**BASE, "selection": {"recipe": "rejection_sampling", "filters": filters}}
        )
    lines = format_errors(info.value)
    assert any(line.startswith(message) for line in lines), lines


def test_spec_without_filters_keeps_its_dump() -> None:
    spec = RunSpec.model_validate(BASE)
    assert "filters" not in spec.selection.model_dump(mode="json")
    with_filters = RunSpec.model_validate(
        {**BASE, "selection": {"recipe": "majority_vote", "filters": [{"kind": "dedup"}]}}
    )
    assert with_filters.selection.model_dump(mode="json")["filters"][0]["kind"] == "dedup"
