"""Verifiers: the Score they return, the protocols they meet, and the registry of them.

Runs in: anywhere (pure). A verifier is deterministic, does no I/O and holds no globals. It
turns (completion, prompt) into a :class:`Score`. Output it cannot parse is a scored 0 with
``reason="no_answer"``; a problem with the *inputs* (a reference-based verifier given a prompt
without a reference, a reference that is not a number) raises, because a silent zero would
poison the training set.

Two shapes, no base class:

* :class:`Verifier` scores one completion (``exact_answer``, ``numeric``, ``regex``,
  ``code_tests``, which runs code in the sandbox of ``verifiers/sandbox/``);
* :class:`GroupVerifier` scores all samples of one prompt together (``majority_vote``);
* model-based *batch* scorers (``reward_model``, ``llm_judge``; :data:`MODEL_SCORERS`) score
  many samples per call with a model a Ray worker loads (``workers/model_scorers.py``).

``version`` is the sha256 of the verifier's source code (its module and the shared answer
extraction) plus its configuration, so a score row always says which code produced it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from dataflywheel.prompts import Prompt, canonical_json, sha256_hex

ScoreStatus = Literal["scored", "unscorable"]


@dataclass(frozen=True)
class Score:
    """A verdict. ``unscorable`` carries no value and no pass (the DB's CHECK agrees)."""

    value: float | None
    passed: bool | None
    status: ScoreStatus
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status == "scored":
            if self.value is None or self.passed is None:
                raise ValueError("a scored Score needs both value and passed")
            if not math.isfinite(self.value):
                raise ValueError(f"Score.value must be finite, got {self.value}")
        elif self.status == "unscorable":
            if self.value is not None or self.passed is not None:
                raise ValueError("an unscorable Score has value=None and passed=None")
        else:
            raise ValueError(f"Score.status must be 'scored' or 'unscorable', got {self.status!r}")
        if not self.reason:
            raise ValueError("Score.reason must say why, e.g. 'match' or 'no_answer'")

    @classmethod
    def scored(cls, passed: bool, reason: str, value: float | None = None, **details: Any) -> Score:
        """A scored verdict; ``value`` defaults to 1.0 for a pass and 0.0 otherwise."""
        return cls(float(passed) if value is None else value, passed, "scored", reason, details)

    @classmethod
    def unscorable(cls, reason: str, **details: Any) -> Score:
        return cls(None, None, "unscorable", reason, details)


class MissingReferenceError(ValueError):
    """A reference-based verifier was given a prompt without the reference it needs."""


@runtime_checkable
class Verifier(Protocol):
    """Scores one completion of one prompt."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def scope(self) -> Literal["sample"]: ...

    def score(self, completion: str, prompt: Prompt) -> Score: ...


@runtime_checkable
class GroupVerifier(Protocol):
    """Scores all samples of one prompt together, one Score per completion, in order."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def scope(self) -> Literal["group"]: ...

    def score_group(self, completions: Sequence[str], prompt: Prompt) -> list[Score]: ...


@cache
def _source_digest(module: ModuleType) -> str:
    return sha256_hex(inspect.getsource(module))


class ScorerResources(BaseModel):
    """What a scorer that runs a model (a reward model, an LLM judge) reserves on Ray for
    each scoring task. Where a scorer runs does not change its verdicts, so these fields are
    not part of its version."""

    num_gpus: float = Field(
        0,
        ge=0,
        le=8,
        description="GPUs each scoring task reserves while this scorer runs (the model runs on "
        "the GPU Ray grants it); not part of the verifier's version.",
    )
    memory_gib: float = Field(
        0,
        ge=0,
        le=4096,
        description="Host memory each scoring task reserves while this scorer runs, in GiB "
        "(Ray's memory resource: tasks wait for a node with that much free); not part of the "
        "verifier's version.",
    )


def scorer_resources(configs: Iterable[BaseModel | Mapping[str, Any]]) -> tuple[float, float]:
    """(GPUs, host memory in GiB) a scoring task reserves for the verifiers ``configs``: the
    most any model scorer among them declares."""
    dumped = [c.model_dump() if isinstance(c, BaseModel) else c for c in configs]
    gpus = max((float(c.get("num_gpus") or 0) for c in dumped), default=0.0)
    memory = max((float(c.get("memory_gib") or 0) for c in dumped), default=0.0)
    return gpus, memory


def verifier_version(config: BaseModel, *modules: ModuleType) -> str:
    """sha256 over the modules' source code and the canonical JSON of the configuration."""
    payload = {
        "config": config.model_dump(mode="json", exclude=set(ScorerResources.model_fields)),
        "code": [_source_digest(module) for module in modules],
    }
    return sha256_hex(canonical_json(payload))


def reference_answers(prompt: Prompt, key: str, verifier: str) -> list[str]:
    """The acceptable reference answers under ``key``; raises if the prompt has none."""
    if prompt.reference is None or prompt.reference.get(key) is None:
        has = "no reference" if prompt.reference is None else f"keys {sorted(prompt.reference)}"
        raise MissingReferenceError(
            f"{verifier} needs prompt.reference[{key!r}] but prompt {prompt.describe()} has {has}"
            "; give the prompt a reference or use a reference-free verifier (regex, majority_vote)"
        )
    value = prompt.reference[key]
    values = value if isinstance(value, list) else [value]
    if not values or any(
        isinstance(v, bool) or not isinstance(v, str | int | float) for v in values
    ):
        raise MissingReferenceError(
            f"{verifier}: prompt {prompt.describe()} reference[{key!r}] must be a string, a "
            f"number or a non-empty list of them, got {value!r}"
        )
    return [v if isinstance(v, str) else canonical_json(v) for v in values]


# The registry is built after Score and the protocols exist, because each verifier module
# imports them from this package.
from dataflywheel.verifiers import (  # noqa: E402
    code,
    exact,
    judge,
    majority,
    numeric,
    regex,
    reward_model,
)

AnyVerifier = Verifier | GroupVerifier
AnyVerifierConfig = (
    exact.ExactAnswerConfig
    | numeric.NumericConfig
    | regex.RegexConfig
    | majority.MajorityVoteConfig
    | code.CodeTestsConfig
    | reward_model.RewardModelConfig
    | judge.LlmJudgeConfig
)

REGISTRY: dict[str, Callable[[Any], AnyVerifier]] = {
    "exact_answer": exact.build,
    "numeric": numeric.build,
    "regex": regex.build,
    "majority_vote": majority.build,
    "code_tests": code.build,
    "reward_model": reward_model.build,
    "llm_judge": judge.build,
}

CONFIG_TYPES: dict[str, type[BaseModel]] = {
    "exact_answer": exact.ExactAnswerConfig,
    "numeric": numeric.NumericConfig,
    "regex": regex.RegexConfig,
    "majority_vote": majority.MajorityVoteConfig,
    "code_tests": code.CodeTestsConfig,
    "reward_model": reward_model.RewardModelConfig,
    "llm_judge": judge.LlmJudgeConfig,
}
MODEL_SCORERS = ("reward_model", "llm_judge")
"""Batch scorers that hold a model (``scope == "batch"``): ``workers/model_scorers.py``
loads their models and runs them; they never run in the flow process."""


def build(config: BaseModel | Mapping[str, Any]) -> AnyVerifier:
    """The verifier a config describes: a config model or a mapping with a ``name``."""
    name = config.get("name") if isinstance(config, Mapping) else getattr(config, "name", None)
    if name not in REGISTRY:
        raise ValueError(f"unknown verifier {name!r}; allowed: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](config)
