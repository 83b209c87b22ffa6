"""A sample scored by two versions of a verifier (a rescore after a code change) counts
once in selection and evaluation: with the version the run's verifiers have now, else the
newest score — never whichever row the database returns last."""

from __future__ import annotations

import sqlalchemy as sa

from dataflywheel.db import ingest, samples
from dataflywheel.db.ingest import KeyedScoreRow, PromptRow, SampleRow
from dataflywheel.db.models import Checkpoint, Round, Run
from dataflywheel.db.session import session_scope


def _score(round_id: int, purpose: str, prompt_id: int, k: int, version: str, passed: bool):
    return KeyedScoreRow(
        round_id=round_id, purpose=purpose, prompt_id=prompt_id, sample_index=k,
        verifier="exact_answer", verifier_version=version, value=float(passed), passed=passed,
        status="scored",
    )  # fmt: skip


def test_one_score_per_sample_and_verifier_the_current_version_first(engine: sa.Engine) -> None:
    rows = [PromptRow(prompt_set="v", split="train", text=f"{n} + 1 =") for n in range(3)]
    with session_scope(engine) as s:
        by_hash = ingest.upsert_prompts(s, rows)
        prompts = [by_hash[r.content_hash] for r in rows]
        run = Run(name="v", spec={}, spec_hash="0" * 64)
        s.add(run)
        s.flush()
        rnd, ckpt = Round(run_id=run.id, index=1, seed=1), Checkpoint(run_id=run.id, status="base")
        s.add_all([rnd, ckpt])
        s.flush()
        ingest.insert_samples(
            s,
            [
                SampleRow(round_id=rnd.id, purpose=purpose, prompt_id=p, checkpoint_id=ckpt.id,
                          sample_index=0, seed=0, text="x", sampling_params={})
                for purpose in ("train", "eval")
                for p in prompts
            ],
        )  # fmt: skip
        # prompt 0: old "v1" passed, current "v2" failed; prompt 1: only v1 (newest wins);
        # prompt 2: v2 stored first, then a newer "v3" (the current version still wins).
        scores = [
            _score(rnd.id, purpose, p, 0, version, passed)
            for purpose in ("train", "eval")
            for p, version, passed in [
                (prompts[0], "v1", True),
                (prompts[0], "v2", False),
                (prompts[1], "v1", True),
                (prompts[2], "v2", False),
                (prompts[2], "v3", True),
            ]
        ]
        ingest.insert_scores_by_key(s, scores)
        rnd_id, ckpt_id = rnd.id, ckpt.id
    with session_scope(engine) as s:
        chosen = samples.selection_scores(s, rnd_id, {"exact_answer": "v2"})
        by_prompt = {
            pid: (row.verifier_version, row.passed)
            for row in chosen
            for pid in s.execute(
                sa.text("SELECT prompt_id FROM samples WHERE id = :i"), {"i": row.sample_id}
            ).scalars()
        }
        assert by_prompt == {
            prompts[0]: ("v2", False),
            prompts[1]: ("v1", True),
            prompts[2]: ("v2", False),
        }
        evaluated = samples.evaluation_samples(s, rnd_id, "eval", ckpt_id, "exact_answer", "v2")
        assert [(r[0], r[2]) for r in evaluated] == [
            (prompts[0], False),
            (prompts[1], True),
            (prompts[2], False),
        ]
