"""Majority vote across one prompt's samples: the pure vote and the ``majority_vote`` verifier.

Runs in: anywhere (pure). Voting on the final answer of several samples is self-consistency
(Wang et al. 2023); used as a pseudo-label it lets a model label problems it has no reference
for (Huang et al. 2022, "Large Language Models Can Self-Improve"; Lee et al. 2025,
"Self-Improving Transformers"). The vote itself lives here so that the verifier and the
``majority_vote`` selection recipe agree exactly.

``share`` is the winner's votes over *all* samples: a sample with no answer counts as dissent,
so a prompt where most samples were unparseable cannot reach a high agreement. Ties go to the
lexicographically smallest answer (independent of sample order) and are flagged ``tied``.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import Score, verifier_version
from dataflywheel.verifiers import answers as answers_module
from dataflywheel.verifiers.answers import ExtractMode, extract_answer, normalise


@dataclass(frozen=True)
class MajorityResult:
    """The outcome of one vote."""

    winner: str | None
    share: float
    tied: bool
    votes: dict[str, int]
    agreement: tuple[bool, ...]
    n: int
    answered: int


def vote_key(answer: str, case_sensitive: bool = False) -> str:
    """The form answers are compared in: normalised, case-folded unless case-sensitive."""
    value = normalise(answer)
    return value if case_sensitive else value.casefold()


def majority_vote(answers: Sequence[str | None], *, case_sensitive: bool = False) -> MajorityResult:
    """Vote over extracted answers (``None`` = no answer), one entry per sample."""
    if not answers:
        raise ValueError("majority_vote needs at least one sample")
    keys = [None if a is None else vote_key(a, case_sensitive) for a in answers]
    votes = Counter(k for k in keys if k)
    if not votes:
        return MajorityResult(None, 0.0, False, {}, tuple(False for _ in keys), len(keys), 0)
    top = max(votes.values())
    leaders = sorted(k for k, count in votes.items() if count == top)
    winner = leaders[0]
    return MajorityResult(
        winner=winner,
        share=top / len(keys),
        tied=len(leaders) > 1,
        votes=dict(sorted(votes.items())),
        agreement=tuple(k == winner for k in keys),
        n=len(keys),
        answered=sum(votes.values()),
    )


class MajorityVoteConfig(BaseModel):
    """Configuration of ``majority_vote``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["majority_vote"] = Field(
        default="majority_vote", description="Verifier name: majority_vote."
    )
    min_agreement: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="A sample passes when it agrees with the winner and the winner holds at "
        "least this share of all samples.",
    )
    extract: ExtractMode = Field(
        default="answer_line",
        description="How the answer is found: answer_line ('Answer: x'), last_number, or full.",
    )
    strict: bool = Field(
        default=False, description="Accept only the exact format of `extract`, with no fallback."
    )
    case_sensitive: bool = Field(default=False, description="Compare answers case-sensitively.")


@dataclass(frozen=True)
class MajorityVoteVerifier:
    """Scores each sample by agreement with its prompt's majority answer (no reference)."""

    config: MajorityVoteConfig
    name: ClassVar[str] = "majority_vote"
    scope: ClassVar[Literal["group"]] = "group"

    @cached_property
    def version(self) -> str:
        return verifier_version(self.config, sys.modules[__name__], answers_module)

    def score_group(self, completions: Sequence[str], prompt: Prompt) -> list[Score]:
        del prompt  # self-labelling: the reference, if any, is deliberately not read
        answers = [extract_answer(c, self.config.extract, self.config.strict) for c in completions]
        result = majority_vote(answers, case_sensitive=self.config.case_sensitive)
        strong = not result.tied and result.share >= self.config.min_agreement
        scores = []
        for answer, agrees in zip(answers, result.agreement, strict=True):
            details = {"answer": answer, "majority": result.winner, "share": result.share}
            if answer is None:
                scores.append(Score.scored(False, "no_answer", **details))
            elif not agrees:
                scores.append(Score.scored(False, "disagrees", 0.0, **details))
            elif result.tied:
                scores.append(Score.scored(False, "tie", result.share, **details))
            else:
                reason = "agrees" if strong else "weak_majority"
                scores.append(Score.scored(strong, reason, result.share, **details))
        return scores


def build(config: MajorityVoteConfig | Mapping[str, Any]) -> MajorityVoteVerifier:
    return MajorityVoteVerifier(MajorityVoteConfig.model_validate(config))
