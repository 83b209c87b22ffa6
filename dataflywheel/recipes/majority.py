"""Majority-vote self-labelling: train on the answer most samples agree on.

Runs in: anywhere (pure). For prompts without a usable reference (harder difficulty levels),
the majority answer across a prompt's samples becomes its pseudo-label (Huang et al. 2022;
Lee et al. 2025, "Self-Improving Transformers Overcome Easy-to-Hard and Length Generalization
Challenges", who keep self-generated labels only after a length filter and a majority vote).

Per prompt, in this order:

1. a sample with no answer is dropped from the vote (``samples_no_answer``);
2. length filter: an answer whose length lies outside ``[min_length_ratio, max_length_ratio]``
   × the prompt's expected answer length is dropped from the vote
   (``samples_length_filtered``) — runaway or truncated outputs are the common failure;
3. vote (``verifiers.majority.majority_vote``; dropped samples count as dissent): the prompt is
   kept when the winner is not tied and holds ≥ ``min_agreement`` of *all* its samples.

One row per kept prompt: the majority answer itself (``target="answer"``), or the text of the
first agreeing sample (``target="sample"``, keeps its reasoning); ``label`` is the answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dataflywheel.recipes import (
    Candidate,
    PromptId,
    SelectionResult,
    SelectionStats,
    SftRow,
    group_by_prompt,
)
from dataflywheel.verifiers.answers import normalise
from dataflywheel.verifiers.majority import majority_vote


class MajorityVoteSelectionConfig(BaseModel):
    """Configuration of the ``majority_vote`` selection recipe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipe: Literal["majority_vote"] = Field(
        default="majority_vote", description="Selection recipe: majority_vote (self-labelling)."
    )
    min_agreement: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Keep a prompt when its majority answer holds at "
        "least this share of all its samples.",
    )
    min_length_ratio: float | None = Field(
        default=None,
        gt=0,
        description="Drop answers shorter than this × the expected answer "
        "length (null: no length filter).",
    )
    max_length_ratio: float | None = Field(
        default=None,
        gt=0,
        description="Drop answers longer than this × the expected answer "
        "length (null: no length filter).",
    )
    target: Literal["answer", "sample"] = Field(
        default="answer",
        description="Train on the majority answer itself, or on the first "
        "agreeing sample's full text.",
    )
    case_sensitive: bool = Field(default=False, description="Compare answers case-sensitively.")

    @model_validator(mode="after")
    def _band(self) -> Self:
        low, high = self.min_length_ratio, self.max_length_ratio
        if (low is None) != (high is None):
            raise ValueError(
                "min_length_ratio: set both min_length_ratio and max_length_ratio to use the "
                "length filter, or neither"
            )
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_length_ratio: must be ≤ max_length_ratio ({low} > {high})")
        return self


def select(
    candidates: Sequence[Candidate],
    config: MajorityVoteSelectionConfig,
    *,
    seed: int,
    expected_lengths: Mapping[PromptId, int] | None = None,
) -> SelectionResult:
    """One pseudo-labelled row per prompt whose samples agree strongly enough."""
    del seed  # the vote is deterministic
    counts = dict.fromkeys(
        (
            "prompts",
            "samples_no_answer",
            "samples_length_filtered",
            "prompts_no_answer",
            "prompts_tied",
            "prompts_low_agreement",
            "prompts_kept",
        ),
        0,
    )
    rows: list[SftRow] = []
    seen = 0
    band = config.min_length_ratio is not None
    for prompt_id, samples in group_by_prompt(candidates):
        counts["prompts"] += 1
        seen += len(samples)
        low = high = 0.0
        if band:
            expected = (expected_lengths or {}).get(prompt_id)
            if expected is None or expected <= 0:
                raise ValueError(
                    f"majority_vote length filter needs a positive expected answer length for "
                    f"prompt {prompt_id!r} (got {expected!r}); pass expected_lengths, or set "
                    "min_length_ratio and max_length_ratio to null"
                )
            low, high = config.min_length_ratio * expected, config.max_length_ratio * expected
        answers: list[str | None] = []
        for candidate in samples:
            answer = normalise(candidate.answer) if candidate.answer is not None else ""
            if not answer:
                counts["samples_no_answer"] += 1
                answers.append(None)
            elif band and not low <= len(answer) <= high:
                counts["samples_length_filtered"] += 1
                answers.append(None)
            else:
                answers.append(answer)
        result = majority_vote(answers, case_sensitive=config.case_sensitive)
        if result.winner is None:
            counts["prompts_no_answer"] += 1
        elif result.tied:
            counts["prompts_tied"] += 1
        elif result.share < config.min_agreement:
            counts["prompts_low_agreement"] += 1
        else:
            counts["prompts_kept"] += 1
            first = result.agreement.index(True)
            label = answers[first]
            assert label is not None  # an agreeing sample has an answer
            text = label if config.target == "answer" else samples[first].text
            rows.append(SftRow(prompt_id, samples[first].sample_id, text, label=label))
    stats = SelectionStats(
        "majority_vote",
        seen,
        len(rows),
        counts,
        {"min_agreement": config.min_agreement, "target": config.target},
    )
    return SelectionResult(tuple(rows), stats)
