"""The ``regex`` verifier: a format check, e.g. "the reply ends with an Answer: line".

Runs in: anywhere (pure). Needs no reference. ``search`` passes when the pattern occurs
anywhere, ``fullmatch`` when the whole completion (stripped) matches. The pattern is compiled
when the spec is validated, so a bad pattern fails before any run starts. Python's ``re`` has
no timeout: patterns come from the spec author (trusted), never from model output.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import Score, verifier_version

RegexFlag = Literal["IGNORECASE", "MULTILINE", "DOTALL"]


class RegexConfig(BaseModel):
    """Configuration of ``regex``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["regex"] = Field(default="regex", description="Verifier name: regex.")
    pattern: str = Field(
        default=r"(?m)^Answer:\s*\S+\s*$",
        description="Python regular expression the completion must match.",
    )
    mode: Literal["search", "fullmatch"] = Field(
        default="search", description="search: anywhere in the text; fullmatch: the whole text."
    )
    flags: list[RegexFlag] = Field(default_factory=list, description="re flags to compile with.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc}); got {value!r}") from None
        return value


@dataclass(frozen=True)
class RegexVerifier:
    """Pass when the completion matches the pattern."""

    config: RegexConfig
    name: ClassVar[str] = "regex"
    scope: ClassVar[Literal["sample"]] = "sample"

    @cached_property
    def version(self) -> str:
        return verifier_version(self.config, sys.modules[__name__])

    @cached_property
    def _compiled(self) -> re.Pattern[str]:
        flags = 0
        for flag in self.config.flags:
            flags |= getattr(re, flag)
        return re.compile(self.config.pattern, flags)

    def score(self, completion: str, prompt: Prompt) -> Score:
        del prompt  # a format check needs nothing from the prompt
        if self.config.mode == "fullmatch":
            matched = self._compiled.fullmatch(completion.strip()) is not None
        else:
            matched = self._compiled.search(completion) is not None
        return Score.scored(matched, "match" if matched else "format_mismatch")


def build(config: RegexConfig | Mapping[str, Any]) -> RegexVerifier:
    return RegexVerifier(RegexConfig.model_validate(config))
