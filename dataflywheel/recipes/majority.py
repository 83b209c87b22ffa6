"""Majority-vote self-labelling: train on the answer most samples agree on.

Runs in: anywhere (pure). For prompts without a usable reference (harder difficulty levels),
the majority answer across a prompt's samples becomes its pseudo-label (Huang et al. 2022;
Lee et al. 2025, "Self-Improving Transformers Overcome Easy-to-Hard and Length Generalization
Challenges", who keep self-generated labels only after a length filter and a majority vote).

Per prompt, in this order:

1. a sample with no answer is dropped from the vote (``samples_no_answer``), and so is one
   that breaks a fixed answer width (``samples_format_filtered``);
2. length filter: an answer whose length (without its zero padding) lies outside
   ``[min_length_ratio, max_length_ratio]`` × the prompt's expected answer length is dropped
   (``samples_length_filtered``) — runaway or truncated outputs are the common failure;
3. vote (``verifiers.majority.majority_vote``; dropped samples count as dissent): the prompt is
   kept when the winner is not tied and holds ≥ ``min_agreement`` of *all* its samples;
4. with ``agree_across_peers``, each peer model's samples vote on their own, and the prompt
   is kept only when every peer's majority is that same answer (``prompts_peers_disagree``);
5. with ``agree_across_views``, prompts that pose the same problem (``vote_group``) are kept
   only together, when every view's majority is the same answer (``prompts_views_disagree``).

One row per kept prompt: the majority answer itself (``target="answer"``), or the text of the
first agreeing sample (``target="sample"``, keeps its reasoning); ``label`` is the answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dataflywheel.recipes import (
    Candidate,
    PromptFacts,
    PromptId,
    SelectionResult,
    SelectionStats,
    SftRow,
    group_by_prompt,
)
from dataflywheel.recipes.filters import FilterConfig, filters_field
from dataflywheel.verifiers.answers import normalise
from dataflywheel.verifiers.majority import MajorityResult, majority_vote


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
    agree_across_peers: bool = Field(
        default=False,
        description="Vote separately over each peer model's samples; keep a prompt only when "
        "every peer's majority is the same answer with at least min_agreement.",
    )
    agree_across_views: bool = Field(
        default=False,
        description="Keep a problem only when all its views (prompts sharing a vote_group, "
        "e.g. a+b and b+a) have the same strong majority answer.",
    )
    filters: list[FilterConfig] = filters_field()

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


@dataclass(frozen=True)
class _Vote:
    prompt_id: PromptId
    samples: list[Candidate]
    answers: list[str | None]
    result: MajorityResult


def _vote(
    prompt_id: PromptId,
    samples: list[Candidate],
    config: MajorityVoteSelectionConfig,
    facts: PromptFacts,
    counts: dict[str, int],
) -> _Vote:
    """Filter one prompt's answers (format, length) and vote over what is left."""
    band = config.min_length_ratio is not None
    low = high = 0.0
    if band:
        expected = facts.expected_length
        if expected is None or expected <= 0:
            raise ValueError(
                f"majority_vote length filter needs a positive expected answer length for "
                f"prompt {prompt_id!r} (got {expected!r}); give the prompt an "
                "expected_answer_length, or set min_length_ratio and max_length_ratio to null"
            )
        assert config.max_length_ratio is not None
        low, high = config.min_length_ratio * expected, config.max_length_ratio * expected
    answers: list[str | None] = []
    for candidate in samples:
        answer = normalise(candidate.answer) if candidate.answer is not None else ""
        if not answer:
            counts["samples_no_answer"] += 1
            answers.append(None)
        elif facts.answer_width is not None and len(answer) != facts.answer_width:
            counts["samples_format_filtered"] += 1
            answers.append(None)
        elif band and not low <= len(facts.significant(answer)) <= high:
            counts["samples_length_filtered"] += 1
            answers.append(None)
        else:
            answers.append(answer)
    return _Vote(
        prompt_id, samples, answers, majority_vote(answers, case_sensitive=config.case_sensitive)
    )


def _verdict(vote: _Vote, config: MajorityVoteSelectionConfig) -> str:
    result = vote.result
    if result.winner is None:
        return "prompts_no_answer"
    if result.tied:
        return "prompts_tied"
    if result.share < config.min_agreement:
        return "prompts_low_agreement"
    return "prompts_kept"


def _peer_verdicts(
    votes: list[_Vote], verdicts: dict[PromptId, str], config: MajorityVoteSelectionConfig
) -> None:
    """Two models from different seeds rarely share a confident mistake, so a pseudo-label
    both majorities agree on is far more often right than one model's (docs/results.md)."""
    for v in votes:
        if verdicts[v.prompt_id] != "prompts_kept":
            continue
        by_peer: dict[int, list[str | None]] = {}
        for candidate, answer in zip(v.samples, v.answers, strict=True):
            by_peer.setdefault(candidate.source, []).append(answer)
        results = [
            majority_vote(answers, case_sensitive=config.case_sensitive)
            for answers in by_peer.values()
        ]
        agreed = len(by_peer) > 1 and all(
            r.winner == v.result.winner and not r.tied and r.share >= config.min_agreement
            for r in results
        )
        if not agreed:
            verdicts[v.prompt_id] = "prompts_peers_disagree"


def select(
    candidates: Sequence[Candidate],
    config: MajorityVoteSelectionConfig,
    *,
    seed: int,
    facts: Mapping[PromptId, PromptFacts] | None = None,
) -> SelectionResult:
    """One pseudo-labelled row per prompt whose samples (and views) agree strongly enough."""
    del seed  # the vote is deterministic
    counts = dict.fromkeys(
        (
            "prompts",
            "samples_no_answer",
            "samples_format_filtered",
            "samples_length_filtered",
            "prompts_no_answer",
            "prompts_tied",
            "prompts_low_agreement",
            "prompts_peers_disagree",
            "prompts_views_disagree",
            "prompts_kept",
        ),
        0,
    )
    facts = facts or {}
    votes: list[_Vote] = []
    seen = 0
    for prompt_id, samples in group_by_prompt(candidates):
        counts["prompts"] += 1
        seen += len(samples)
        votes.append(_vote(prompt_id, samples, config, facts.get(prompt_id, PromptFacts()), counts))
    verdicts = {v.prompt_id: _verdict(v, config) for v in votes}
    if config.agree_across_peers:
        _peer_verdicts(votes, verdicts, config)
    if config.agree_across_views:
        # A problem posed several ways (a+b, b+a) is kept only when every view's majority
        # is the same strong answer: one model's systematic error on one wording rarely
        # repeats on the other, so agreement across views filters confident mistakes.
        groups: dict[str, list[_Vote]] = {}
        for v in votes:
            group = facts.get(v.prompt_id, PromptFacts()).vote_group or f"prompt:{v.prompt_id}"
            groups.setdefault(group, []).append(v)
        for members in groups.values():
            winners = {m.result.winner for m in members}  # already in vote-key form
            all_kept = all(verdicts[m.prompt_id] == "prompts_kept" for m in members)
            if all_kept and len(winners) > 1:
                for m in members:
                    verdicts[m.prompt_id] = "prompts_views_disagree"
            elif not all_kept:
                for m in members:
                    if verdicts[m.prompt_id] == "prompts_kept":
                        verdicts[m.prompt_id] = "prompts_views_disagree"
    rows: list[SftRow] = []
    for v in votes:
        counts[verdicts[v.prompt_id]] += 1
        if verdicts[v.prompt_id] != "prompts_kept":
            continue
        first = v.result.agreement.index(True)
        label = v.answers[first]
        assert label is not None  # an agreeing sample has an answer
        text = label if config.target == "answer" else v.samples[first].text
        rows.append(SftRow(v.prompt_id, v.samples[first].sample_id, text, label=label))
    stats = SelectionStats(
        "majority_vote",
        seen,
        len(rows),
        counts,
        {
            "min_agreement": config.min_agreement,
            "target": config.target,
            "agree_across_peers": config.agree_across_peers,
            "agree_across_views": config.agree_across_views,
        },
    )
    return SelectionResult(tuple(rows), stats)
