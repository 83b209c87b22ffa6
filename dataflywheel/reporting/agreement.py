"""Judge-vs-verifier agreement: how often a model-based scorer's verdict matches a rule
verifier's on the same samples, per round.

Runs in: anywhere with a database session (:func:`round_agreement` only reads and never
commits); :func:`tally` and :class:`Agreement` are pure.

Where a round's train samples were scored both by a model-based scorer (``llm_judge``,
``reward_model``: :data:`dataflywheel.verifiers.MODEL_SCORERS`, the "judge") and by a rule
verifier (any other verifier: ``exact_answer``, ``numeric``, ``regex``, ``code_tests``,
``majority_vote``), each sample gives one pair of verdicts, per (judge, version, verifier,
version). A sample with an unscorable verdict on either side is counted apart, never as an
agreement or a disagreement. ``rate`` is agreements over compared samples; ``kappa`` is
Cohen's κ, agreement beyond what the two pass rates alone would give by chance (a judge that
passes everything agrees often with a lenient verifier and says nothing). A judge that
rarely agrees with a trustworthy verifier should not rank training data (Zheng et al. 2023,
"Judging LLM-as-a-Judge").
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from dataflywheel.db.models import Sample, Score
from dataflywheel.verifiers import MODEL_SCORERS


@dataclass(frozen=True, slots=True)
class Agreement:
    """A judge's and a verifier's verdicts on the same samples of one round."""

    judge: str
    judge_version: str
    verifier: str
    verifier_version: str
    both_pass: int
    both_fail: int
    judge_only: int  # the judge passed what the verifier failed
    verifier_only: int  # the verifier passed what the judge failed
    unscorable: int  # samples with an unscorable verdict on either side (not compared)

    @property
    def compared(self) -> int:
        """Samples both scored (pass or fail)."""
        return self.both_pass + self.both_fail + self.judge_only + self.verifier_only

    @property
    def samples(self) -> int:
        """Samples both ran on."""
        return self.compared + self.unscorable

    @property
    def agree(self) -> int:
        return self.both_pass + self.both_fail

    @property
    def rate(self) -> float | None:
        """Agreements / compared samples (None when none was compared)."""
        return self.agree / self.compared if self.compared else None

    @property
    def kappa(self) -> float | None:
        """Cohen's κ = (p_o − p_e) / (1 − p_e); None when nothing was compared or chance
        agreement is already certain (both sides gave a single verdict throughout)."""
        n = self.compared
        if not n:
            return None
        judge_pass = (self.both_pass + self.judge_only) / n
        verifier_pass = (self.both_pass + self.verifier_only) / n
        chance = judge_pass * verifier_pass + (1 - judge_pass) * (1 - verifier_pass)
        if math.isclose(chance, 1.0):
            return None
        return (self.agree / n - chance) / (1 - chance)


def tally(
    judge: tuple[str, str],
    verifier: tuple[str, str],
    verdicts: Iterable[tuple[bool | None, bool | None, int]],
) -> Agreement:
    """Fold ``(judge passed, verifier passed, count)`` rows into an :class:`Agreement`;
    ``judge`` and ``verifier`` are (name, version), a ``None`` verdict is unscorable."""
    cells: dict[str, int] = defaultdict(int)
    for judged, verified, count in verdicts:
        if judged is None or verified is None:
            cell = "unscorable"
        elif judged and verified:
            cell = "both_pass"
        elif not judged and not verified:
            cell = "both_fail"
        else:
            cell = "judge_only" if judged else "verifier_only"
        cells[cell] += count
    return Agreement(
        judge[0],
        judge[1],
        verifier[0],
        verifier[1],
        both_pass=cells["both_pass"],
        both_fail=cells["both_fail"],
        judge_only=cells["judge_only"],
        verifier_only=cells["verifier_only"],
        unscorable=cells["unscorable"],
    )


def round_agreement(session: Session, round_ids: list[int]) -> dict[int, list[Agreement]]:
    """round id -> the agreement of every (judge, verifier) pair that both scored some of the
    round's train samples, ordered by judge then verifier (name, version)."""
    judge, verifier = aliased(Score), aliased(Score)
    keys = (
        Sample.round_id,
        judge.verifier,
        judge.verifier_version,
        verifier.verifier,
        verifier.verifier_version,
    )
    stmt = (
        sa.select(*keys, judge.passed, verifier.passed, sa.func.count())
        .select_from(Sample)
        .join(judge, judge.sample_id == Sample.id)
        .join(verifier, verifier.sample_id == Sample.id)
        .where(
            Sample.round_id.in_(round_ids),
            Sample.purpose == "train",
            judge.verifier.in_(MODEL_SCORERS),
            verifier.verifier.not_in(MODEL_SCORERS),
        )
        .group_by(*keys, judge.passed, verifier.passed)
    )
    grouped: dict[tuple[int, str, str, str, str], list[tuple[bool | None, bool | None, int]]]
    grouped = defaultdict(list)
    for rid, j, jv, v, vv, judged, verified, count in session.execute(stmt):
        grouped[(rid, j, jv, v, vv)].append((judged, verified, int(count)))
    found: dict[int, list[Agreement]] = defaultdict(list)
    for (rid, j, jv, v, vv), verdicts in sorted(grouped.items()):
        found[rid].append(tally((j, jv), (v, vv), verdicts))
    return found
