"""Selection recipes: which scored samples become training data, and the registry of them.

Runs in: anywhere (pure). Inputs and outputs are plain frozen dataclasses so that a Prefect
task can build them from database rows and write the result back as dataset members:

* in: :class:`Candidate` (one sample with its extracted answer and its scores by verifier);
* out: :class:`SelectionResult` with rows (:class:`SftRow` or :class:`PreferencePair`) and
  :class:`SelectionStats` (what each filter removed, and the yield).

Every recipe is ``select(candidates, config, *, seed, facts=None)``; the output is
a deterministic function of its inputs, in (prompt, sample index) order, whatever order the
candidates came in.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from dataflywheel.prompts import canonical_json
from dataflywheel.verifiers import Score

PromptId = int | str


@dataclass(frozen=True)
class Candidate:
    """One generated sample, as selection sees it."""

    sample_id: int | str
    prompt_id: PromptId
    sample_index: int
    text: str
    answer: str | None
    scores: dict[str, Score] = field(default_factory=dict)
    source: int = 0  # the peer model that generated it (training.peers)


def _vote_group(meta: Mapping[str, Any]) -> str | None:
    """An arithmetic prompt's group is its fact (``a+b`` and ``b+a`` are one), computed from
    the operands: a prompt row is shared by every run that drew it, so metadata written by the
    first one (e.g. a warm-up without views) cannot be relied on for the group."""
    if meta.get("op") == "+" and isinstance(meta.get("a"), int) and isinstance(meta.get("b"), int):
        a, b = sorted((meta["a"], meta["b"]))
        return f"{meta.get('family', 'addition')}:{a}+{b}"
    return meta.get("vote_group")


@dataclass(frozen=True)
class PromptFacts:
    """What selection may know about a prompt besides its samples (never its reference).

    ``expected_length``: the longest plausible answer (the length filter's yardstick);
    ``answer_width``: answers are zero-padded to exactly this many characters;
    ``reversed_digits``: digits are written least significant first (so padding is on the
    right); ``vote_group``: prompts that pose the same problem (views such as ``a+b`` and
    ``b+a``), which a view-consistent vote requires to agree.
    """

    expected_length: int | None = None
    answer_width: int | None = None
    reversed_digits: bool = False
    vote_group: str | None = None

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> PromptFacts:
        return cls(
            expected_length=meta.get("expected_answer_length"),
            answer_width=meta.get("answer_width"),
            reversed_digits=bool(meta.get("reversed_digits", False)),
            vote_group=_vote_group(meta),
        )

    def significant(self, answer: str) -> str:
        """The answer without its zero padding (``86100`` reversed → ``861``)."""
        if self.answer_width is None:
            return answer
        stripped = answer.rstrip("0") if self.reversed_digits else answer.lstrip("0")
        return stripped or "0"


@dataclass(frozen=True)
class SftRow:
    """One supervised example: train on ``text`` as the completion of the prompt."""

    prompt_id: PromptId
    sample_id: int | str | None
    text: str
    label: str | None = None  # the pseudo-label, when it is not the prompt's reference


@dataclass(frozen=True)
class PreferencePair:
    """One DPO pair from the same prompt: ``chosen`` scored above ``rejected``."""

    prompt_id: PromptId
    chosen_sample_id: int | str
    rejected_sample_id: int | str
    chosen_text: str
    rejected_text: str
    chosen_score: float
    rejected_score: float

    @property
    def margin(self) -> float:
        return self.chosen_score - self.rejected_score


@dataclass(frozen=True)
class SelectionStats:
    """Counts per filter, in the order applied; ``seen`` samples in, ``kept`` rows out."""

    recipe: str
    seen: int
    kept: int
    counts: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def yield_rate(self) -> float:
        """Rows out per sample in (0.0 when nothing came in)."""
        return self.kept / self.seen if self.seen else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The JSON stored in ``datasets.stats``."""
        return {
            "recipe": self.recipe,
            "seen": self.seen,
            "kept": self.kept,
            "yield": self.yield_rate,
            "counts": dict(self.counts),
            **self.details,
        }


@dataclass(frozen=True)
class SelectionResult:
    rows: tuple[SftRow, ...] | tuple[PreferencePair, ...]
    stats: SelectionStats


def group_by_prompt(candidates: Iterable[Candidate]) -> list[tuple[PromptId, list[Candidate]]]:
    """Candidates grouped per prompt, prompts and samples in ascending order.

    Raises on two candidates with the same (prompt_id, sample_index): that is a duplicated
    generation shard, and selecting from it would double-count.
    """
    groups: dict[PromptId, dict[int, Candidate]] = {}
    for candidate in candidates:
        samples = groups.setdefault(candidate.prompt_id, {})
        if candidate.sample_index in samples:
            raise ValueError(
                f"two candidates for prompt {candidate.prompt_id!r} sample "
                f"{candidate.sample_index}; deduplicate generation shards before selection"
            )
        samples[candidate.sample_index] = candidate
    # Ints before strings, then natural order: deterministic even for mixed id types.
    ordered = sorted(groups, key=lambda pid: (isinstance(pid, str), pid))
    return [(pid, [groups[pid][i] for i in sorted(groups[pid])]) for pid in ordered]


def require_score(candidate: Candidate, verifier: str) -> Score:
    """The candidate's score from ``verifier``; a missing score is an error, not a fail."""
    try:
        return candidate.scores[verifier]
    except KeyError:
        raise ValueError(
            f"sample {candidate.sample_id!r} (prompt {candidate.prompt_id!r}) has no score from "
            f"verifier {verifier!r} (it has: {sorted(candidate.scores) or 'none'}); "
            "score every sample before selecting"
        ) from None


def score_value(candidate: Candidate, score_by: str | None) -> float | None:
    """The value that ranks ``candidate``: verifier ``score_by``'s, or the mean of all its
    scores; None when a needed score is unscorable."""
    names = [score_by] if score_by is not None else sorted(candidate.scores)
    if not names:
        raise ValueError(
            f"sample {candidate.sample_id!r} (prompt {candidate.prompt_id!r}) has no scores; "
            "score every sample before selecting"
        )
    scores = [require_score(candidate, name) for name in names]
    if any(score.value is None for score in scores):
        return None
    return sum(score.value for score in scores if score.value is not None) / len(scores)


def prompt_rng(seed: int, prompt_id: PromptId, purpose: str) -> random.Random:
    """An RNG of its own per prompt: adding a prompt never changes another prompt's draw."""
    digest = hashlib.sha256(canonical_json([seed, purpose, prompt_id]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# Built after the types above exist, because each recipe module imports them from here.
from dataflywheel.recipes import best_of_n, majority, preference, rejection  # noqa: E402

SelectionConfig = (
    rejection.RejectionSamplingConfig
    | majority.MajorityVoteSelectionConfig
    | preference.PreferencePairsConfig
    | best_of_n.BestOfNConfig
)
Recipe = Callable[..., SelectionResult]

REGISTRY: dict[str, Recipe] = {
    "rejection_sampling": rejection.select,
    "majority_vote": majority.select,
    "preference_pairs": preference.select,
    "best_of_n": best_of_n.select,
}

CONFIG_TYPES: dict[str, type[BaseModel]] = {
    "rejection_sampling": rejection.RejectionSamplingConfig,
    "majority_vote": majority.MajorityVoteSelectionConfig,
    "preference_pairs": preference.PreferencePairsConfig,
    "best_of_n": best_of_n.BestOfNConfig,
}


def select(
    candidates: Sequence[Candidate],
    config: BaseModel,
    *,
    seed: int,
    facts: Mapping[PromptId, PromptFacts] | None = None,
) -> SelectionResult:
    """Run the recipe a config names (``config.recipe``)."""
    name = getattr(config, "recipe", None)
    if name not in REGISTRY:
        raise ValueError(f"unknown recipe {name!r}; allowed: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](candidates, config, seed=seed, facts=facts)
