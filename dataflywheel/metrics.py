"""Evaluation metrics over per-prompt results: accuracy, pass@k, accuracy per difficulty.

Runs in: anywhere (pure). Input: one :class:`PromptResult` per evaluated prompt (n samples,
c of them correct). Definitions:

* ``accuracy``: correct samples / all samples (micro average);
* ``pass@1``: the mean over prompts of c/n (macro average; equals accuracy when every prompt
  has the same n);
* ``pass@k``: the mean over prompts of the unbiased estimator of Chen et al. 2021 ("Evaluating
  Large Language Models Trained on Code"), 1 - C(n-c, k)/C(n, k), in its product form
  1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials;
* ``per_difficulty_accuracy``: ``accuracy`` per difficulty level, keys as strings (JSON).

Empty or inconsistent input raises: an evaluation over nothing is a broken pipeline, and a
metric of 0 would wrongly block (or pass) promotion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Metric = Literal["accuracy", "pass@1", "pass@k", "per_difficulty_accuracy"]
METRICS: tuple[Metric, ...] = ("accuracy", "pass@1", "pass@k", "per_difficulty_accuracy")


@dataclass(frozen=True)
class PromptResult:
    """One prompt's evaluation: ``correct`` of ``n`` samples passed."""

    prompt_id: int | str
    n: int
    correct: int
    difficulty: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.correct <= self.n or self.n < 1:
            raise ValueError(
                f"prompt {self.prompt_id!r}: need n ≥ 1 and 0 ≤ correct ≤ n, "
                f"got n={self.n}, correct={self.correct}"
            )


def _nonempty(results: Sequence[PromptResult]) -> Sequence[PromptResult]:
    if not results:
        raise ValueError("no evaluation results; an empty eval set cannot be scored")
    return results


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased probability that at least one of k samples drawn from n (c correct) passes."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 ≤ c ≤ n and 1 ≤ k ≤ n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def accuracy(results: Sequence[PromptResult]) -> float:
    results = _nonempty(results)
    return sum(r.correct for r in results) / sum(r.n for r in results)


def mean_pass_at_k(results: Sequence[PromptResult], k: int) -> float:
    results = _nonempty(results)
    short = [r.prompt_id for r in results if r.n < k]
    if short:
        raise ValueError(
            f"pass@{k} needs at least {k} samples per prompt; {len(short)} prompt(s) have fewer "
            f"(first: {short[0]!r})"
        )
    return sum(pass_at_k(r.n, r.correct, k) for r in results) / len(results)


def per_difficulty_accuracy(results: Sequence[PromptResult]) -> dict[str, float]:
    results = _nonempty(results)
    missing = [r.prompt_id for r in results if r.difficulty is None]
    if missing:
        raise ValueError(
            f"per_difficulty_accuracy needs a difficulty on every prompt; {len(missing)} have "
            f"none (first: {missing[0]!r})"
        )
    levels = sorted({r.difficulty for r in results if r.difficulty is not None})
    return {str(level): accuracy([r for r in results if r.difficulty == level]) for level in levels}


def summarise(
    results: Sequence[PromptResult], metrics: Sequence[str], k: int = 1
) -> dict[str, float | dict[str, float]]:
    """The requested metrics, keyed by the names asked for (``pass@k`` stays ``pass@k``)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; allowed: {', '.join(METRICS)}")
    summary: dict[str, float | dict[str, float]] = {}
    for metric in metrics:
        if metric == "accuracy":
            summary[metric] = accuracy(results)
        elif metric == "pass@1":
            summary[metric] = mean_pass_at_k(results, 1)
        elif metric == "pass@k":
            summary[metric] = mean_pass_at_k(results, k)
        else:
            summary[metric] = per_difficulty_accuracy(results)
    return summary
