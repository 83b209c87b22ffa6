"""What a rescore reads (``dataflywheel.db.rescoring``) on a run larger than one statement's
bound parameters allow (PostgreSQL takes at most 65,535): the samples still to score, the
coverage and the tally come out exact, and no query lists the run's sample ids.

The run (built with COPY, a few seconds):

    round 0  train  one sample of each of 70,000 prompts; prompt n holds a score of the
                    version under test unless n % 10 == 0 (1: unscorable, 2-4: passed,
                    else failed)
    round 1  train  two samples of each of the first 2,000 prompts: index 0 scored (passed),
                    index 1 scored (failed) unless n % 4 == 0
             eval   one sample of each of the first 2,000 prompts, none scored
    distractors     an older version on round 0's unscored samples, another verifier on the
                    eval samples, and a second run whose samples are half scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataflywheel.db import ingest, rescoring
from dataflywheel.db.ingest import KeyedScoreRow, PromptRow, SampleRow
from dataflywheel.db.models import Checkpoint, Round, Run, Sample
from dataflywheel.db.rescoring import Coverage, Selection, Tally
from dataflywheel.db.samples import prompts_by_id
from dataflywheel.db.session import session_scope

PROMPTS = 70_000
HEAD = 2_000  # the prompts round 1 samples again
VERIFIER, VERSION = "exact_answer", "v2"

Key = tuple[int, str, int, int]  # (round index, purpose, prompt number, sample index)


def _layout() -> dict[Key, str | None]:
    """Every sample of the run under test and the verdict of VERSION it holds (None: none)."""
    layout: dict[Key, str | None] = {}
    for n in range(PROMPTS):
        verdict = "unscorable" if n % 10 == 1 else "passed" if n % 10 < 5 else "failed"
        layout[(0, "train", n, 0)] = None if n % 10 == 0 else verdict
    for n in range(HEAD):
        layout[(1, "train", n, 0)] = "passed"
        layout[(1, "train", n, 1)] = None if n % 4 == 0 else "failed"
        layout[(1, "eval", n, 0)] = None
    return layout


def _score(
    round_id: int, key: Key, prompt_id: int, verifier: str, version: str, verdict: str
) -> KeyedScoreRow:
    scored = verdict != "unscorable"
    return KeyedScoreRow(
        round_id=round_id,
        purpose=key[1],
        prompt_id=prompt_id,
        sample_index=key[3],
        verifier=verifier,
        verifier_version=version,
        value=float(verdict == "passed") if scored else None,
        passed=verdict == "passed" if scored else None,
        status="scored" if scored else "unscorable",
    )


@dataclass(frozen=True)
class Built:
    run_id: int
    prompt_ids: list[int]  # by prompt number
    round_ids: dict[int, int]  # by round index
    samples: dict[Key, int]  # sample id by key
    layout: dict[Key, str | None]


@pytest.fixture
def built(engine: sa.Engine) -> Built:
    layout = _layout()
    rows = [PromptRow(prompt_set="big", split="train", text=f"{n} + {n} =") for n in range(PROMPTS)]
    with session_scope(engine) as s:
        by_hash = ingest.upsert_prompts(s, rows)
        prompt_ids = [by_hash[r.content_hash] for r in rows]
        runs = [Run(name=name, spec={}, spec_hash="0" * 64) for name in ("big", "other")]
        s.add_all(runs)
        s.flush()
        rounds = [Round(run_id=runs[0].id, index=i, seed=i) for i in (0, 1)]
        other_round = Round(run_id=runs[1].id, index=0, seed=0)
        ckpts = [Checkpoint(run_id=run.id, status="base") for run in runs]
        s.add_all([*rounds, other_round, *ckpts])
        s.flush()
        round_ids = {r.index: r.id for r in rounds}
        samples = [
            SampleRow(round_id=round_ids[i], purpose=purpose, prompt_id=prompt_ids[n],
                      checkpoint_id=ckpts[0].id, sample_index=k, seed=k, text=f"{n}/{k}",
                      sampling_params={})
            for i, purpose, n, k in layout
        ] + [
            SampleRow(round_id=other_round.id, prompt_id=prompt_ids[n], checkpoint_id=ckpts[1].id,
                      sample_index=0, seed=0, text="other", sampling_params={})
            for n in range(10)
        ]  # fmt: skip
        assert ingest.insert_samples(s, samples).inserted == len(layout) + 10
        scores = [
            _score(round_ids[key[0]], key, prompt_ids[key[2]], VERIFIER, VERSION, verdict)
            for key, verdict in layout.items()
            if verdict is not None
        ]
        scores += [  # other versions and verifiers, and the other run, must not count
            _score(round_ids[0], key, prompt_ids[key[2]], VERIFIER, "v1", "passed")
            for key, verdict in layout.items()
            if verdict is None and key[0] == 0
        ]
        scores += [
            _score(round_ids[1], key, prompt_ids[key[2]], "regex", VERSION, "passed")
            for key in layout
            if key[1] == "eval"
        ]
        scores += [
            _score(other_round.id, (0, "train", n, 0), prompt_ids[n], VERIFIER, VERSION, "passed")
            for n in range(0, 10, 2)
        ]
        assert ingest.insert_scores_by_key(s, scores).inserted == len(scores)
        ids = {
            (index, purpose, prompt_id, k): sample_id
            for sample_id, index, purpose, prompt_id, k in s.execute(
                sa.select(Sample.id, Round.index, Sample.purpose, Sample.prompt_id,
                          Sample.sample_index)
                .join(Round, Round.id == Sample.round_id)
                .where(Round.run_id == runs[0].id)
            )
        }  # fmt: skip
    number = {pid: n for n, pid in enumerate(prompt_ids)}
    by_key = {(i, p, number[pid], k): sample_id for (i, p, pid, k), sample_id in ids.items()}
    assert by_key.keys() == layout.keys()
    return Built(runs[0].id, prompt_ids, round_ids, by_key, layout)


CASES = [
    # (purposes, round index, whole prompts)
    (("train", "eval", "baseline"), None, False),
    (("train", "eval", "baseline"), None, True),
    (("train",), None, False),
    (("train",), 0, True),
    (("train",), 1, False),
    (("train",), 1, True),
    (("eval",), None, False),
    (("baseline",), None, False),
]


def test_a_run_larger_than_the_parameter_limit_is_selected_and_tallied_exactly(
    built: Built, engine: sa.Engine
) -> None:
    layout = built.layout
    assert len(layout) > 65_535
    with Session(engine) as session:
        for purposes, round_index, whole_prompts in CASES:
            case = (purposes, round_index, whole_prompts)
            chosen = Selection(built.run_id, purposes, round_index)
            selected = [
                key for key in layout if key[1] in purposes and round_index in (None, key[0])
            ]
            missing = [key for key in selected if layout[key] is None]
            if whole_prompts:  # a group: one prompt's samples of one round and purpose
                groups = {key[:3] for key in missing}
                expected = [key for key in selected if key[:3] in groups]
            else:
                expected = missing

            coverage = rescoring.coverage(session, chosen, VERIFIER, VERSION)
            assert coverage == Coverage(len(selected), len(selected) - len(missing)), case

            rows = rescoring.samples_to_score(
                session, chosen, VERIFIER, VERSION, whole_prompts=whole_prompts
            )
            assert sorted(r.id for r in rows) == sorted(built.samples[k] for k in expected), case
            key_of = {built.samples[k]: k for k in expected}
            order = [
                (built.round_ids[key_of[r.id][0]], key_of[r.id][1], r.prompt_id, r.sample_index)
                for r in rows
            ]
            assert order == sorted(order), case  # whole groups stay together, in order
            assert all((r.round_id, r.purpose) == order[i][:2] for i, r in enumerate(rows)), case
            assert all(
                r.prompt_id == built.prompt_ids[key_of[r.id][2]]
                and r.text == f"{key_of[r.id][2]}/{r.sample_index}"
                for r in rows
            ), case

            verdicts = [layout[key] for key in selected]
            assert rescoring.tally(session, chosen, VERIFIER, VERSION) == Tally(
                passed=verdicts.count("passed"),
                failed=verdicts.count("failed"),
                unscorable=verdicts.count("unscorable"),
            ), case

        # The whole run, counted by hand from the layout in the module docstring.
        everything = Selection(built.run_id, ("train", "eval", "baseline"))
        assert rescoring.coverage(session, everything, VERIFIER, VERSION) == Coverage(
            76_000, 76_000 - 7_000 - 500 - 2_000
        )
        assert rescoring.tally(session, everything, VERIFIER, VERSION) == Tally(
            passed=21_000 + 2_000, failed=35_000 + 1_500, unscorable=7_000
        )
        # A version nobody scored with: every sample is still to score.
        fresh = rescoring.samples_to_score(session, everything, VERIFIER, "v3")
        assert len(fresh) == 76_000
        # All 70,000 prompts at once: more ids than one statement could bind.
        found = prompts_by_id(session, [r.prompt_id for r in fresh])
        assert sorted(p.id for p in found) == sorted(built.prompt_ids)
