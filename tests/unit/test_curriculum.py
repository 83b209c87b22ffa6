"""The curriculum gate: the next band from per-level held-out accuracies (and the drop margin)."""

from __future__ import annotations

from typing import Any

import pytest

from dataflywheel.rounds.curriculum import Step, next_step
from dataflywheel.spec import CurriculumSpec

LEVELS = {"1": 1.0, "2": 0.95, "3": 0.1}
PRIMARY = {"gate": "primary"}

CASES: dict[str, tuple[dict[str, Any], tuple[int, int], dict[str, Any], tuple[int, int], str]] = {
    # The band's top level is what earns a climb, not the easy levels below it.
    "top_passes": ({}, (1, 2), {"levels": LEVELS}, (1, 3), "climb"),
    "top_fails": ({}, (1, 3), {"levels": LEVELS}, (1, 3), "hold"),
    "top_not_measured": ({}, (1, 2), {"levels": {"1": 1.0}}, (1, 2), "hold"),
    "no_evaluation": ({}, (1, 2), {"levels": None}, (1, 2), "hold"),
    "shift": ({"mode": "shift"}, (1, 2), {"levels": LEVELS}, (2, 3), "climb"),
    "step_clipped": ({"step": 5}, (1, 2), {"levels": LEVELS}, (1, 4), "climb"),
    "at_max_level": ({}, (1, 4), {"levels": {"4": 1.0}}, (1, 4), "hold"),
    "threshold_zero_climbs": ({"threshold": 0.0}, (1, 3), {"levels": LEVELS}, (1, 4), "climb"),
    "threshold_one_holds": ({"threshold": 1.0}, (1, 2), {"levels": LEVELS}, (1, 2), "hold"),
    "threshold_one_met": ({"threshold": 1.0}, (1, 1), {"levels": LEVELS}, (1, 2), "climb"),
    # max_lower_drop: a lower level of the band forgotten since the previous decision holds it.
    "drop_too_large": (
        {"max_lower_drop": 0.1},
        (1, 2),
        {"levels": {"1": 0.8, "2": 0.95}, "previous_levels": {"1": 1.0, "2": 0.5}},
        (1, 2),
        "hold",
    ),
    "drop_within_margin": (
        {"max_lower_drop": 0.25},
        (1, 2),
        {"levels": {"1": 0.8, "2": 0.95}, "previous_levels": {"1": 1.0, "2": 0.5}},
        (1, 3),
        "climb",
    ),
    "drop_of_the_top_level_not_checked": (
        {"max_lower_drop": 0.0},
        (1, 2),
        {"levels": {"1": 1.0, "2": 0.9}, "previous_levels": {"1": 1.0, "2": 1.0}},
        (1, 3),
        "climb",
    ),
    "drop_below_the_band_not_checked": (
        {"max_lower_drop": 0.0, "mode": "shift"},
        (2, 3),
        {"levels": {"1": 0.0, "2": 1.0, "3": 1.0}, "previous_levels": {"1": 1.0, "2": 1.0}},
        (3, 4),
        "climb",
    ),
    "drop_without_a_previous_decision": (
        {"max_lower_drop": 0.0},
        (1, 2),
        {"levels": LEVELS, "previous_levels": None},
        (1, 3),
        "climb",
    ),
    # gate: primary keeps the earlier rule: the primary metric on the whole eval set.
    "primary_passes": (PRIMARY, (1, 3), {"primary": 0.95, "levels": LEVELS}, (1, 4), "climb"),
    "primary_fails": (PRIMARY, (1, 2), {"primary": 0.5, "levels": LEVELS}, (1, 2), "hold"),
    "primary_missing": (PRIMARY, (1, 2), {"primary": None, "levels": None}, (1, 2), "hold"),
}


@pytest.mark.parametrize(
    ("fields", "band", "measured", "expected", "decision"), CASES.values(), ids=CASES.keys()
)
def test_next_band_from_per_level_accuracies(
    fields: dict[str, Any],
    band: tuple[int, int],
    measured: dict[str, Any],
    expected: tuple[int, int],
    decision: str,
) -> None:
    curriculum = CurriculumSpec(**{"threshold": 0.9, "max_level": 4, **fields})
    step = next_step(curriculum, band, **{"primary": None, **measured})
    assert (step.band, step.decision) == (expected, decision), step.reason
    assert step.levels == measured.get("levels")


def test_a_hold_says_why() -> None:
    curriculum = CurriculumSpec(threshold=0.9, max_level=4, max_lower_drop=0.1)
    assert next_step(curriculum, (1, 3), primary=None, levels=LEVELS).reason == (
        "level 3 accuracy 0.100 < threshold 0.9"
    )
    dropped = next_step(
        curriculum, (1, 2), primary=None, levels={"1": 0.5, "2": 1.0}, previous_levels={"1": 0.9}
    )
    assert dropped.reason == (
        "level 1 accuracy fell 0.400 (0.900 → 0.500), more than max_lower_drop 0.1"
    )


def test_the_manifest_entry_records_the_band_and_what_the_decision_read() -> None:
    step = next_step(CurriculumSpec(max_level=4), (1, 2), primary=0.5, levels=LEVELS)
    assert step.manifest() == {
        "min_difficulty": 1,
        "max_difficulty": 3,
        "decision": "climb",
        "reason": "level 2 accuracy 0.950 ≥ threshold 0.9",
        "levels": LEVELS,
    }
    assert Step((1, 1), "start", "the prompts' band").manifest() == {
        "min_difficulty": 1,
        "max_difficulty": 1,
        "decision": "start",
        "reason": "the prompts' band",
    }
