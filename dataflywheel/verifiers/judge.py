"""The ``llm_judge`` scorer: a language model grades each sample against a rubric.

Runs in: anywhere for the pure parts (:meth:`JudgeVerifier.render`, :meth:`JudgeVerifier.parse`);
the generation itself runs in a Ray worker (``workers/model_scorers.py``), which hands
:meth:`JudgeVerifier.score_batch` a ``generate`` function over any backend of
``generation/`` (transformers, vLLM, an OpenAI-compatible endpoint).

The judge reads ``rubric`` with ``{prompt}`` and ``{completion}`` replaced and writes a
judgement; ``score_pattern`` (its first group, or the group named ``score``) extracts a
number on ``[min_score, max_score]`` and ``reason_pattern`` an optional reason. ``value`` is
the score scaled to [0, 1]; the sample passes at ``pass_score`` or above. A judgement with no
parsable score, or a score off the scale, is **unscorable** with the reason and the raw
judgement in ``details`` — never a silent pass or fail.

``model: current`` judges each sample with the checkpoint that generated it: the
self-rewarding loop of Yuan et al. 2024 ("Self-Rewarding Language Models"), where the model
being trained builds its own preference pairs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Literal, Self

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import Score, ScorerResources, verifier_version
from dataflywheel.verifiers.reward_model import URI_PREFIXES, _resolve_local, render

CURRENT = "current"
DEFAULT_RUBRIC = (
    "Grade the answer to the question from 0 (wrong or useless) to 10 (correct and clear).\n"
    "Question: {prompt}\nAnswer: {completion}\n"
    "Reply as 'Score: <0-10>. Reason: <one sentence>'.\n"
)
MAX_JUDGEMENT_CHARS = 2000


class LlmJudgeConfig(ScorerResources):
    """Configuration of ``llm_judge``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["llm_judge"] = Field(default="llm_judge", description="Verifier name.")
    model: str = Field(
        CURRENT,
        description="The judge: 'current' (the checkpoint that generated the sample: "
        "self-rewarding), a local model folder, or a store:sha256/... tree key; "
        "ignored by backend openai.",
    )
    backend: Literal["transformers", "vllm", "openai"] = Field(
        "transformers", description="Generation backend of the judge."
    )
    base_url: str | None = Field(None, description="backend openai: e.g. http://host:8000/v1.")
    model_name: str | None = Field(None, description="backend openai: the model to request.")
    rubric: str = Field(
        DEFAULT_RUBRIC,
        min_length=1,
        description="The judge's prompt; {prompt} and {completion} are replaced.",
    )
    score_pattern: str = Field(
        r"(?i)score\s*[:=]\s*(-?\d+(?:\.\d+)?)",
        description="Regular expression whose group 'score' (or first group) is the number.",
    )
    reason_pattern: str | None = Field(
        r"(?i)reason\s*[:=]\s*(.+)",
        description="Regular expression whose first group is the judge's reason; null: none.",
    )
    min_score: float = Field(0.0, description="Lowest score of the rubric's scale.")
    max_score: float = Field(10.0, description="Highest score of the rubric's scale.")
    pass_score: float = Field(7.0, description="A sample passes at this score or above.")
    max_tokens: int = Field(64, ge=1, description="Most tokens of a judgement.")
    temperature: float = Field(0.0, ge=0, description="Judge sampling temperature; 0 is greedy.")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Judge weights dtype.")

    @field_validator("score_pattern", "reason_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str, info: ValidationInfo) -> str:
        if value == CURRENT or value.startswith(URI_PREFIXES):
            return value
        return _resolve_local(value, info)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.min_score < self.max_score:
            raise ValueError(
                f"min_score: must be < max_score ({self.min_score} ≥ {self.max_score})"
            )
        if not self.min_score <= self.pass_score <= self.max_score:
            raise ValueError(
                f"pass_score: must lie in [min_score, max_score] (got {self.pass_score})"
            )
        if "{completion}" not in self.rubric:
            raise ValueError("rubric: must contain {completion} (the sample to judge)")
        if self.backend == "openai" and not (self.base_url and self.model_name):
            raise ValueError("base_url: backend openai needs base_url and model_name")
        if self.backend != "openai" and (self.base_url or self.model_name):
            raise ValueError("base_url: base_url and model_name are for backend openai only")
        return self


Generate = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class JudgeVerifier:
    """Renders rubric prompts and parses judgements; a worker supplies the generation."""

    config: LlmJudgeConfig
    name: ClassVar[str] = "llm_judge"
    scope: ClassVar[Literal["batch"]] = "batch"

    @cached_property
    def version(self) -> str:
        return verifier_version(self.config, sys.modules[__name__])

    def render(self, completion: str, prompt: Prompt) -> str:
        return render(self.config.rubric, prompt.text, completion)

    def parse(self, judgement: str) -> Score:
        """The Score a judgement gives; unscorable when no score can be read from it."""
        c = self.config
        shown = judgement[-MAX_JUDGEMENT_CHARS:]
        match = re.search(c.score_pattern, judgement)
        if match is None:
            return Score.unscorable("judge_unparseable", judgement=shown)
        raw = match.groupdict().get("score") or next((g for g in match.groups() if g), None)
        try:
            value = float(raw if raw is not None else match.group(0))
        except ValueError:
            return Score.unscorable("judge_unparseable", judgement=shown)
        if not c.min_score <= value <= c.max_score:
            return Score.unscorable(
                "judge_out_of_range", judgement=shown, judge_score=value,
                scale=[c.min_score, c.max_score],
            )  # fmt: skip
        reason = None
        if c.reason_pattern is not None:
            found = re.search(c.reason_pattern, judgement)
            reason = (found.group(1) if found and found.groups() else None) or None
        passed = value >= c.pass_score
        scaled = (value - c.min_score) / (c.max_score - c.min_score)
        return Score.scored(
            passed,
            "judge_pass" if passed else "judge_fail",
            scaled,
            judge_score=value,
            judge_reason=reason.strip()[:500] if reason else None,
            judgement=shown,
        )

    def score_batch(
        self,
        completions: Sequence[str],
        prompts: Sequence[Prompt],
        generate: Generate | None = None,
    ) -> list[Score]:
        """Judge every (completion, prompt) with ``generate`` (rubric texts in, judgements
        out, in order) and parse the judgements."""
        if generate is None:
            raise RuntimeError(
                "llm_judge needs a generation backend: it is scored by workers/verify.py "
                "(workers/model_scorers.py), which loads the judge model"
            )
        texts = [self.render(c, p) for c, p in zip(completions, prompts, strict=True)]
        judgements = generate(texts)
        if len(judgements) != len(texts):
            raise RuntimeError(f"judge returned {len(judgements)} judgements for {len(texts)}")
        return [self.parse(j) for j in judgements]


def build(config: LlmJudgeConfig | Mapping[str, Any]) -> JudgeVerifier:
    return JudgeVerifier(LlmJudgeConfig.model_validate(config))
