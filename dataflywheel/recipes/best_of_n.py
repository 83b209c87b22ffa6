"""Best-of-N: per prompt, the top ``k`` samples by a named score.

Runs in: anywhere (pure). The selection of reward-ranked fine-tuning (RAFT, Dong et al. 2023)
and of ReST's top-k (Gulcehre et al. 2023): generate N samples per prompt, rank them by a
reward (a verifier's score value: a reward model, a judge, a graded test pass rate, or the
mean of every verifier's), keep the best ``k``. Unlike rejection sampling it keeps the best
of a prompt even when nothing passes outright, unless ``min_score`` asks for a floor. Ties go
to the lowest sample index, so the result does not depend on input order; exact-text
duplicates within a prompt are dropped before ranking when ``deduplicate`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.recipes import (
    Candidate,
    PromptFacts,
    PromptId,
    SelectionResult,
    SelectionStats,
    SftRow,
    group_by_prompt,
    score_value,
)
from dataflywheel.recipes.filters import FilterConfig, filters_field


class BestOfNConfig(BaseModel):
    """Configuration of ``best_of_n``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipe: Literal["best_of_n"] = Field(
        default="best_of_n", description="Selection recipe: best_of_n (top k per prompt)."
    )
    score_by: str | None = Field(
        default=None,
        description="Verifier whose score value ranks samples; null: the mean of all scores.",
    )
    k: int = Field(default=1, ge=1, description="Samples kept per prompt: the k best.")
    min_score: float | None = Field(
        default=None,
        description="Keep a sample only if its ranking value is at least this; null: no floor.",
    )
    deduplicate: bool = Field(
        default=True,
        description="Drop samples whose text repeats an earlier sample's of the same prompt.",
    )
    filters: list[FilterConfig] = filters_field()


def select(
    candidates: Sequence[Candidate],
    config: BestOfNConfig,
    *,
    seed: int,
    facts: Mapping[PromptId, PromptFacts] | None = None,
) -> SelectionResult:
    """The ``k`` highest-valued samples of each prompt (at or above ``min_score``)."""
    del seed, facts  # deterministic ranking, no length filter
    counts = dict.fromkeys(
        ("prompts", "unscorable", "duplicate", "below_min_score", "outranked", "prompts_kept"), 0
    )
    rows: list[SftRow] = []
    seen = 0
    for prompt_id, samples in group_by_prompt(candidates):
        counts["prompts"] += 1
        seen += len(samples)
        ranked: list[tuple[float, Candidate]] = []
        texts: set[str] = set()
        for candidate in samples:
            value = score_value(candidate, config.score_by)
            if value is None:
                counts["unscorable"] += 1
                continue
            if config.deduplicate and candidate.text in texts:
                counts["duplicate"] += 1
                continue
            texts.add(candidate.text)
            if config.min_score is not None and value < config.min_score:
                counts["below_min_score"] += 1
                continue
            ranked.append((value, candidate))
        ranked.sort(key=lambda vc: (-vc[0], vc[1].sample_index))
        counts["outranked"] += max(0, len(ranked) - config.k)
        kept = sorted((c for _, c in ranked[: config.k]), key=lambda c: c.sample_index)
        counts["prompts_kept"] += bool(kept)
        rows.extend(SftRow(prompt_id, c.sample_id, c.text) for c in kept)
    details = {"score_by": config.score_by or "mean_of_all", "k": config.k}
    if config.min_score is not None:
        details["min_score"] = config.min_score
    stats = SelectionStats("best_of_n", seen, len(rows), counts, details)
    return SelectionResult(tuple(rows), stats)
