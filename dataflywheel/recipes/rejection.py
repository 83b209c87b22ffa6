"""Rejection sampling: keep the samples that pass verification.

Runs in: anywhere (pure). The selection step of STaR (Zelikman et al. 2022), RFT (Yuan et al.
2023) and ReST-EM (Singh et al. 2023): generate several samples per prompt, keep the ones the
verifiers accept, fine-tune on them. Exact-text duplicates within a prompt are dropped (RFT
found distinct correct paths, not repeats, drive the gain), and a per-prompt cap keeps easy
prompts, which pass on every sample, from dominating the set (ReST-EM caps per problem too).
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
    prompt_rng,
    require_score,
)
from dataflywheel.recipes.filters import FilterConfig, filters_field


class RejectionSamplingConfig(BaseModel):
    """Configuration of ``rejection_sampling``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipe: Literal["rejection_sampling"] = Field(
        default="rejection_sampling", description="Selection recipe: rejection_sampling."
    )
    require: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Verifiers a sample must pass; null: every verifier that scored it.",
    )
    max_per_prompt: int | None = Field(
        default=4, ge=1, description="Keep at most this many samples per prompt; null: no cap."
    )
    deduplicate: bool = Field(
        default=True,
        description="Drop samples whose text repeats an earlier sample's of the same prompt.",
    )
    filters: list[FilterConfig] = filters_field()


def _verdict(
    candidate: Candidate, require: list[str] | None
) -> Literal["pass", "fail", "unscorable"]:
    names = require if require is not None else sorted(candidate.scores)
    if not names:
        raise ValueError(
            f"sample {candidate.sample_id!r} (prompt {candidate.prompt_id!r}) has no scores; "
            "score every sample before selecting"
        )
    scores = [require_score(candidate, name) for name in names]
    if any(score.status == "unscorable" for score in scores):
        return "unscorable"
    return "pass" if all(score.passed for score in scores) else "fail"


def select(
    candidates: Sequence[Candidate],
    config: RejectionSamplingConfig,
    *,
    seed: int,
    facts: Mapping[PromptId, PromptFacts] | None = None,
) -> SelectionResult:
    """Passing, deduplicated samples, at most ``max_per_prompt`` per prompt (seeded draw)."""
    del facts  # no length filter in this recipe
    counts = dict.fromkeys(
        ("prompts", "passed", "failed", "unscorable", "duplicate", "over_cap", "prompts_kept"), 0
    )
    rows: list[SftRow] = []
    seen = 0
    for prompt_id, samples in group_by_prompt(candidates):
        counts["prompts"] += 1
        seen += len(samples)
        kept: list[Candidate] = []
        texts: set[str] = set()
        for candidate in samples:
            verdict = _verdict(candidate, config.require)
            if verdict != "pass":
                counts["failed" if verdict == "fail" else "unscorable"] += 1
                continue
            counts["passed"] += 1
            if config.deduplicate and candidate.text in texts:
                counts["duplicate"] += 1
                continue
            texts.add(candidate.text)
            kept.append(candidate)
        if config.max_per_prompt is not None and len(kept) > config.max_per_prompt:
            counts["over_cap"] += len(kept) - config.max_per_prompt
            draw = prompt_rng(seed, prompt_id, "rejection_sampling.cap")
            kept = sorted(draw.sample(kept, config.max_per_prompt), key=lambda c: c.sample_index)
        counts["prompts_kept"] += bool(kept)
        rows.extend(SftRow(prompt_id, c.sample_id, c.text) for c in kept)
    stats = SelectionStats("rejection_sampling", seen, len(rows), counts)
    return SelectionResult(tuple(rows), stats)
