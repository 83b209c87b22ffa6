"""Preference pairs for DPO: per prompt, the best sample against the worst.

Runs in: anywhere (pure). Verifier scores stand in for a reward model: the highest-scoring
sample is ``chosen``, the lowest ``rejected`` (on-policy pairs, like the correct-vs-incorrect
pairs of Pang et al. 2024, "Iterative Reasoning Preference Optimization"). A pair is kept only
when the scores differ by at least ``margin`` (and at all): pairs of near-equal samples teach
DPO (Rafailov et al. 2023) little and are mostly noise. Ties on score go to the lowest sample
index, so the result does not depend on input order. The pair policy is recorded in the stats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.recipes import (
    Candidate,
    PreferencePair,
    PromptFacts,
    PromptId,
    SelectionResult,
    SelectionStats,
    group_by_prompt,
    score_value,
)
from dataflywheel.recipes.filters import FilterConfig, filters_field


class PreferencePairsConfig(BaseModel):
    """Configuration of ``preference_pairs``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipe: Literal["preference_pairs"] = Field(
        default="preference_pairs", description="Selection recipe: preference_pairs (for DPO)."
    )
    score_by: str | None = Field(
        default=None,
        description="Verifier whose score value ranks samples; null: the mean of all scores.",
    )
    margin: float = Field(
        default=0.5, ge=0, description="Keep a pair only if chosen - rejected ≥ this (and > 0)."
    )
    pair_policy: Literal["best_vs_worst"] = Field(
        default="best_vs_worst", description="How pairs are formed: best_vs_worst, one per prompt."
    )
    filters: list[FilterConfig] = filters_field()


def select(
    candidates: Sequence[Candidate],
    config: PreferencePairsConfig,
    *,
    seed: int,
    facts: Mapping[PromptId, PromptFacts] | None = None,
) -> SelectionResult:
    """One (best, worst) pair per prompt whose score gap reaches the margin."""
    del seed, facts  # deterministic, no length filter
    counts = dict.fromkeys(
        (
            "prompts",
            "samples_unscorable",
            "prompts_too_few",
            "prompts_below_margin",
            "prompts_kept",
        ),
        0,
    )
    pairs: list[PreferencePair] = []
    seen = 0
    for prompt_id, samples in group_by_prompt(candidates):
        counts["prompts"] += 1
        seen += len(samples)
        ranked: list[tuple[float, Candidate]] = []
        for candidate in samples:
            value = score_value(candidate, config.score_by)
            if value is None:
                counts["samples_unscorable"] += 1
            else:
                ranked.append((value, candidate))
        if len(ranked) < 2:
            counts["prompts_too_few"] += 1
            continue
        best_value, best = min(ranked, key=lambda vc: (-vc[0], vc[1].sample_index))
        worst_value, worst = min(ranked, key=lambda vc: (vc[0], vc[1].sample_index))
        gap = best_value - worst_value
        if gap <= 0 or gap < config.margin:
            counts["prompts_below_margin"] += 1
            continue
        counts["prompts_kept"] += 1
        pairs.append(
            PreferencePair(
                prompt_id=prompt_id,
                chosen_sample_id=best.sample_id,
                rejected_sample_id=worst.sample_id,
                chosen_text=best.text,
                rejected_text=worst.text,
                chosen_score=best_value,
                rejected_score=worst_value,
            )
        )
    details = {
        "pair_policy": config.pair_policy,
        "score_by": config.score_by or "mean_of_all",
        "margin": config.margin,
    }
    stats = SelectionStats("preference_pairs", seen, len(pairs), counts, details)
    return SelectionResult(tuple(pairs), stats)
