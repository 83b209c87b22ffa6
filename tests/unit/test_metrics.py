"""Metrics: pass@k against brute-force enumeration, accuracy, per-difficulty, summarise.

Runs in: the test process (pure).
"""

from __future__ import annotations

import itertools
import math

import pytest

from dataflywheel.metrics import (
    PromptResult,
    accuracy,
    mean_pass_at_k,
    pass_at_k,
    per_difficulty_accuracy,
    summarise,
)


def _brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """The share of all k-subsets of n samples (c correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_matches_enumeration(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n() -> None:
    n, c, k = 1000, 7, 100
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)
    assert pass_at_k(200, 0, 50) == 0.0 and pass_at_k(200, 200, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_refuses_impossible_inputs(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


RESULTS = [
    PromptResult("a", n=4, correct=4, difficulty=1),
    PromptResult("b", n=4, correct=1, difficulty=1),
    PromptResult("c", n=2, correct=0, difficulty=2),
]


def test_accuracy_is_micro_and_pass_at_1_is_macro() -> None:
    assert accuracy(RESULTS) == pytest.approx(5 / 10)
    assert mean_pass_at_k(RESULTS, 1) == pytest.approx((1.0 + 0.25 + 0.0) / 3)


def test_per_difficulty_accuracy() -> None:
    assert per_difficulty_accuracy(RESULTS) == {"1": pytest.approx(5 / 8), "2": 0.0}
    with pytest.raises(ValueError, match="needs a difficulty"):
        per_difficulty_accuracy([PromptResult("x", 1, 1)])


def test_summarise_returns_the_requested_metrics_by_name() -> None:
    summary = summarise(RESULTS, ["accuracy", "pass@k", "per_difficulty_accuracy"], k=2)
    assert set(summary) == {"accuracy", "pass@k", "per_difficulty_accuracy"}
    expected = (pass_at_k(4, 4, 2) + pass_at_k(4, 1, 2) + pass_at_k(2, 0, 2)) / 3
    assert summary["pass@k"] == pytest.approx(expected)
    assert summarise(RESULTS, ["pass@1"])["pass@1"] == pytest.approx(1.25 / 3)


def test_summarise_is_loud_about_bad_input() -> None:
    with pytest.raises(ValueError, match="no evaluation results"):
        summarise([], ["accuracy"])
    with pytest.raises(ValueError, match="unknown metric"):
        summarise(RESULTS, ["bleu"])
    with pytest.raises(ValueError, match="pass@4 needs at least 4 samples"):
        summarise(RESULTS, ["pass@k"], k=4)
    with pytest.raises(ValueError, match="0 ≤ correct ≤ n"):
        PromptResult("x", n=2, correct=3)
