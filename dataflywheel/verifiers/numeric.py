"""The ``numeric`` verifier: the extracted answer is within a tolerance of the reference.

Runs in: anywhere (pure). ``absolute``: |answer - reference| ≤ tolerance. ``relative``:
|answer - reference| ≤ tolerance · |reference| (so a reference of 0 needs an exact 0). An
answer that is not a number is ``no_answer``; a reference that is not a number raises — that
is a broken prompt set, not a wrong model.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import MissingReferenceError, Score, reference_answers, verifier_version
from dataflywheel.verifiers import answers as answers_module
from dataflywheel.verifiers.answers import ExtractMode, extract_answer, parse_number


class NumericConfig(BaseModel):
    """Configuration of ``numeric``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["numeric"] = Field(default="numeric", description="Verifier name: numeric.")
    tolerance: float = Field(
        default=1e-6, ge=0, description="Largest accepted difference (absolute or relative)."
    )
    mode: Literal["absolute", "relative"] = Field(
        default="absolute",
        description="Whether tolerance is absolute or relative to the reference.",
    )
    extract: ExtractMode = Field(
        default="answer_line",
        description="How the answer is found: answer_line ('Answer: x'), last_number, or full.",
    )
    strict: bool = Field(
        default=False, description="Accept only the exact format of `extract`, with no fallback."
    )
    reference_key: str = Field(
        default="answer", description="Key of prompt.reference that holds the expected number."
    )


@dataclass(frozen=True)
class NumericVerifier:
    """Pass when the answer is a number within tolerance of a reference number."""

    config: NumericConfig
    name: ClassVar[str] = "numeric"
    scope: ClassVar[Literal["sample"]] = "sample"

    @cached_property
    def version(self) -> str:
        return verifier_version(self.config, sys.modules[__name__], answers_module)

    def _references(self, prompt: Prompt) -> list[float]:
        values = []
        for raw in reference_answers(prompt, self.config.reference_key, self.name):
            number = parse_number(raw)
            if number is None:
                raise MissingReferenceError(
                    f"numeric: prompt {prompt.describe()} reference {raw!r} is not a number; "
                    "fix the prompt set or use exact_answer"
                )
            values.append(number)
        return values

    def score(self, completion: str, prompt: Prompt) -> Score:
        references = self._references(prompt)
        raw = extract_answer(completion, self.config.extract, self.config.strict)
        answer = None if raw is None else parse_number(raw)
        if answer is None:
            return Score.scored(False, "no_answer", answer=raw, expected=references)
        errors = [abs(answer - ref) for ref in references]
        bounds = [
            self.config.tolerance * (abs(ref) if self.config.mode == "relative" else 1.0)
            for ref in references
        ]
        passed = any(err <= bound for err, bound in zip(errors, bounds, strict=True))
        return Score.scored(
            passed,
            "within_tolerance" if passed else "out_of_tolerance",
            answer=answer,
            expected=references,
            error=min(errors),
        )


def build(config: NumericConfig | Mapping[str, Any]) -> NumericVerifier:
    return NumericVerifier(NumericConfig.model_validate(config))
