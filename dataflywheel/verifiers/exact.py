"""The ``exact_answer`` verifier: the extracted answer equals a reference answer.

Runs in: anywhere (pure). Both sides are normalised (whitespace, markdown, a final full stop)
and compared as text, case-insensitively unless configured otherwise; a reference may list
several acceptable answers. Use ``numeric`` when ``3.0`` and ``3`` should agree.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import Score, reference_answers, verifier_version
from dataflywheel.verifiers import answers as answers_module
from dataflywheel.verifiers.answers import ExtractMode, extract_answer, normalise


class ExactAnswerConfig(BaseModel):
    """Configuration of ``exact_answer``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["exact_answer"] = Field(
        default="exact_answer", description="Verifier name: exact_answer."
    )
    extract: ExtractMode = Field(
        default="answer_line",
        description="How the answer is found: answer_line ('Answer: x'), last_number, or full "
        "(the whole completion).",
    )
    strict: bool = Field(
        default=False, description="Accept only the exact format of `extract`, with no fallback."
    )
    case_sensitive: bool = Field(default=False, description="Compare letters case-sensitively.")
    reference_key: str = Field(
        default="answer", description="Key of prompt.reference that holds the expected answer."
    )


@dataclass(frozen=True)
class ExactAnswerVerifier:
    """Pass when the extracted answer equals one of the reference answers."""

    config: ExactAnswerConfig
    name: ClassVar[str] = "exact_answer"
    scope: ClassVar[Literal["sample"]] = "sample"

    @cached_property
    def version(self) -> str:
        return verifier_version(self.config, sys.modules[__name__], answers_module)

    def _canon(self, text: str) -> str:
        value = normalise(text)
        return value if self.config.case_sensitive else value.casefold()

    def score(self, completion: str, prompt: Prompt) -> Score:
        expected = reference_answers(prompt, self.config.reference_key, self.name)
        answer = extract_answer(completion, self.config.extract, self.config.strict)
        if answer is None:
            return Score.scored(False, "no_answer", expected=expected)
        passed = self._canon(answer) in {self._canon(e) for e in expected}
        return Score.scored(
            passed, "match" if passed else "mismatch", answer=answer, expected=expected
        )


def build(config: ExactAnswerConfig | Mapping[str, Any]) -> ExactAnswerVerifier:
    return ExactAnswerVerifier(ExactAnswerConfig.model_validate(config))
