"""Judge-vs-verifier agreement (``dataflywheel.reporting.agreement``): verdict pairs folded
into the 2×2 table, the agreement rate and Cohen's κ, every number written out."""

from __future__ import annotations

import pytest

from dataflywheel.reporting.agreement import Agreement, tally

JUDGE, VERIFIER = ("llm_judge", "j1"), ("exact_answer", "v1")


@pytest.mark.parametrize(
    ("verdicts", "cells", "rate", "kappa"),
    [
        # 8 compared: 3 both pass, 3 both fail, 1 each way; p_o = 6/8, p_e = 1/2 -> κ = 0.5
        (
            [(True, True, 3), (False, False, 3), (True, False, 1), (False, True, 1)],
            (3, 3, 1, 1, 0),
            0.75,
            0.5,
        ),
        # unscorable on either side is counted apart and never compared
        (
            [(True, True, 2), (None, True, 1), (False, None, 2), (None, None, 1)],
            (2, 0, 0, 0, 4),
            1.0,
            None,  # both sides passed everything compared: chance agreement is certain
        ),
        # a judge that passes everything against a verifier that fails half: p_o = p_e
        ([(True, True, 2), (True, False, 2)], (2, 0, 2, 0, 0), 0.5, 0.0),
        # systematic disagreement: κ = −1
        ([(True, False, 2), (False, True, 2)], (0, 0, 2, 2, 0), 0.0, -1.0),
        # rows of the same cell add up (one row per verdict pair from the GROUP BY)
        ([(True, True, 1), (True, True, 4), (False, False, 5)], (5, 5, 0, 0, 0), 1.0, 1.0),
        ([], (0, 0, 0, 0, 0), None, None),
        ([(None, False, 3)], (0, 0, 0, 0, 3), None, None),
    ],
)
def test_tally(
    verdicts: list[tuple[bool | None, bool | None, int]],
    cells: tuple[int, int, int, int, int],
    rate: float | None,
    kappa: float | None,
) -> None:
    a = tally(JUDGE, VERIFIER, verdicts)
    assert (a.judge, a.judge_version, a.verifier, a.verifier_version) == (*JUDGE, *VERIFIER)
    assert (a.both_pass, a.both_fail, a.judge_only, a.verifier_only, a.unscorable) == cells
    assert a.compared == sum(cells[:4]) and a.samples == sum(cells)
    assert a.agree == cells[0] + cells[1]
    assert a.rate == (None if rate is None else pytest.approx(rate))
    assert a.kappa == (None if kappa is None else pytest.approx(kappa))


def test_kappa_against_a_hand_computation() -> None:
    # judge passes 6/10, verifier 5/10; 4 both pass, 3 both fail -> p_o 0.7,
    # p_e = 0.6*0.5 + 0.4*0.5 = 0.5, κ = 0.4
    a = Agreement("reward_model", "r", "numeric", "n", 4, 3, 2, 1, 0)
    assert (a.compared, a.agree, a.rate) == (10, 7, pytest.approx(0.7))
    assert a.kappa == pytest.approx(0.4)
