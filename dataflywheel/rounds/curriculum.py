"""The curriculum's gate: which difficulty band the next round samples from, and why.

Runs in: anywhere (pure). ``start_round`` calls :func:`next_step` with the incumbent's
held-out accuracy per level (``per_difficulty_accuracy`` of its evaluation) and the levels the
previous round's decision read, and records the returned :class:`Step` in the round's manifest
(``curriculum``), so a report shows what every climb or hold was based on.

With ``gate: top_level`` the band climbs only when its *top* level, measured on held-out
prompts of that level alone, reaches the threshold: a band that passed once does not keep
climbing on the strength of its easy levels (Lee et al. 2025, "Self-Improving Transformers
Overcome Easy-to-Hard and Length Generalization Challenges", raise the length only once the
current one is solved). ``max_lower_drop`` also holds the band while an easier level of it is
being forgotten. ``gate: primary`` keeps the earlier rule: the primary metric on the run's
whole eval set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dataflywheel.spec import CurriculumSpec

Band = tuple[int, int]


@dataclass(frozen=True)
class Step:
    """The band a round samples from and the decision that chose it."""

    band: Band
    decision: str  # "climb", "hold" or "start" (the run's first band)
    reason: str
    levels: dict[str, float] | None = None  # the per-level accuracies the decision read

    def manifest(self) -> dict[str, Any]:
        """The round manifest's ``curriculum`` entry."""
        out: dict[str, Any] = {
            "min_difficulty": self.band[0],
            "max_difficulty": self.band[1],
            "decision": self.decision,
            "reason": self.reason,
        }
        if self.levels is not None:
            out["levels"] = dict(self.levels)
        return out


def _climb(curriculum: CurriculumSpec, band: Band, reason: str, levels: dict | None) -> Step:
    new = curriculum.next_band(band, 1.0)  # past any threshold: the step and mode alone
    return Step(new, "climb", reason, levels)


def next_step(
    curriculum: CurriculumSpec,
    band: Band,
    *,
    primary: float | None,
    levels: dict[str, float] | None,
    previous_levels: dict[str, float] | None = None,
) -> Step:
    """The next round's band from this round's ``band`` and the incumbent's evaluation:
    ``primary`` (its primary metric) for ``gate: primary``, ``levels`` (accuracy per level,
    keys as strings) for ``gate: top_level``; ``previous_levels`` are the accuracies the
    previous decision read (for ``max_lower_drop``)."""
    low, high = band
    if high >= curriculum.max_level:
        return Step(band, "hold", f"at curriculum.max_level ({curriculum.max_level})", levels)
    if curriculum.gate == "primary":
        if primary is None:
            return Step(band, "hold", "the incumbent has no evaluation", levels)
        if primary < curriculum.threshold:
            why = f"primary {primary:.3f} < threshold {curriculum.threshold}"
            return Step(band, "hold", why, levels)
        why = f"primary {primary:.3f} ≥ threshold {curriculum.threshold}"
        return _climb(curriculum, band, why, levels)
    top = (levels or {}).get(str(high))
    if top is None:
        why = f"no held-out accuracy at level {high} (the band's top)"
        return Step(band, "hold", why, levels)
    if top < curriculum.threshold:
        why = f"level {high} accuracy {top:.3f} < threshold {curriculum.threshold}"
        return Step(band, "hold", why, levels)
    if curriculum.max_lower_drop is not None and previous_levels:
        assert levels is not None
        for level in range(low, high):
            now, before = levels.get(str(level)), previous_levels.get(str(level))
            if now is not None and before is not None and before - now > curriculum.max_lower_drop:
                why = (
                    f"level {level} accuracy fell {before - now:.3f} ({before:.3f} → {now:.3f}), "
                    f"more than max_lower_drop {curriculum.max_lower_drop}"
                )
                return Step(band, "hold", why, levels)
    why = f"level {high} accuracy {top:.3f} ≥ threshold {curriculum.threshold}"
    return _climb(curriculum, band, why, levels)
