"""What a rescore reads: a run's samples that still lack a score of one verifier version, and
the tally of that version's verdicts over the run's samples.

Runs in: anywhere a session is open (the ``rescore_samples`` Prefect task, tests). Functions
take a ``Session`` and never commit.

The samples are chosen in SQL by (run, purposes, round) through joins, and "not yet scored"
is a ``NOT EXISTS`` on (sample, verifier, version), never a list of sample ids: a large run
has more samples than the 65,535 bound parameters PostgreSQL accepts in one statement. The
one list left, the prompts of the samples to score, is read in chunks
(``samples.prompts_by_id``).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataflywheel.db.models import Round, Sample, Score


@dataclass(frozen=True)
class Selection:
    """The samples a rescore covers: run ``run_id``'s samples of ``purposes``, in round
    ``round_index`` or (None) in every round."""

    run_id: int
    purposes: tuple[str, ...]
    round_index: int | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        """The filters on ``samples`` joined to ``rounds``."""
        clauses = [Round.run_id == self.run_id, Sample.purpose.in_(self.purposes)]
        if self.round_index is not None:
            clauses.append(Round.index == self.round_index)
        return clauses


@dataclass(frozen=True)
class Coverage:
    """How many of the selected samples there are and how many hold a score of the version."""

    samples: int
    scored: int


@dataclass(frozen=True)
class Tally:
    """The verdicts of one verifier version over the selected samples."""

    passed: int
    failed: int
    unscorable: int


def _scored(verifier: str, version: str) -> sa.Exists:
    """Whether the sample of the enclosing query holds a score of ``verifier`` at ``version``."""
    return (
        sa.select(Score.id)
        .where(
            Score.sample_id == Sample.id,
            Score.verifier == verifier,
            Score.verifier_version == version,
        )
        .exists()
    )


def coverage(session: Session, selection: Selection, verifier: str, version: str) -> Coverage:
    """Count the selected samples, and those already scored by ``verifier`` at ``version``."""
    scored = _scored(verifier, version)
    total, done = session.execute(
        sa.select(sa.func.count(), sa.func.count().filter(scored))
        .select_from(Sample)
        .join(Round, Round.id == Sample.round_id)
        .where(*selection.where())
    ).one()
    return Coverage(samples=total, scored=done)


def samples_to_score(
    session: Session,
    selection: Selection,
    verifier: str,
    version: str,
    *,
    whole_prompts: bool = False,
) -> list[sa.Row[tuple[int, int, int, str, int, str]]]:
    """The selected samples without a score of ``verifier`` at ``version``, as rows of
    (id, prompt_id, sample_index, text, round_id, purpose) in (round, purpose, prompt,
    sample index) order.

    With ``whole_prompts`` (a group verifier such as a majority vote, which compares a
    prompt's samples with each other), every selected sample of a prompt's group that has
    any sample missing, scored or not. A group is one prompt's samples of one round and
    purpose: the same prompt in another round (another model) or purpose (round 0's baseline
    and eval samples answer the same held-out prompts with two models) is another vote.
    """
    missing = ~_scored(verifier, version)
    columns = (
        Sample.id,
        Sample.prompt_id,
        Sample.sample_index,
        Sample.text,
        Sample.round_id,
        Sample.purpose,
    )
    query = sa.select(*columns).join(Round, Round.id == Sample.round_id)
    query = query.where(*selection.where())
    if whole_prompts:
        # A window over one scan, not a self-join on prompt_id: right after a round's COPY,
        # before autovacuum has analyzed the tables, the planner ran the self-join as a
        # nested loop, quadratic in the run's samples.
        group = (Sample.round_id, Sample.purpose, Sample.prompt_id)
        flag = sa.func.bool_or(missing).over(partition_by=group)
        rows = query.add_columns(flag.label("group_missing")).subquery()
        query = sa.select(
            rows.c.id,
            rows.c.prompt_id,
            rows.c.sample_index,
            rows.c.text,
            rows.c.round_id,
            rows.c.purpose,
        ).where(rows.c.group_missing)
        order = (rows.c.round_id, rows.c.purpose, rows.c.prompt_id, rows.c.sample_index)
    else:
        query = query.where(missing)
        order = (Sample.round_id, Sample.purpose, Sample.prompt_id, Sample.sample_index)
    return list(session.execute(query.order_by(*order)).all())


def tally(session: Session, selection: Selection, verifier: str, version: str) -> Tally:
    """Passed, failed and unscorable among the selected samples' scores of ``verifier`` at
    ``version`` (at most one per sample: scores are unique per sample and version)."""
    verdict = sa.case(
        (Score.status == "unscorable", "unscorable"),
        (Score.passed.is_(True), "passed"),
        else_="failed",
    )
    counts = dict(
        session.execute(
            sa.select(verdict, sa.func.count())
            .select_from(Score)
            .join(Sample, Sample.id == Score.sample_id)
            .join(Round, Round.id == Sample.round_id)
            .where(
                Score.verifier == verifier,
                Score.verifier_version == version,
                *selection.where(),
            )
            .group_by(verdict)
        ).all()
    )
    return Tally(
        passed=counts.get("passed", 0),
        failed=counts.get("failed", 0),
        unscorable=counts.get("unscorable", 0),
    )
