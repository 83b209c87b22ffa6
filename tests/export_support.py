"""A small but complete run written as rows (and dataset files in a local store) for the
export tests, plus a fast way to add many samples.

The run (examples/rejection-sft.yaml's spec; ids in the returned dict):

    base -> round 0 warm-up c0 promoted (trained on 'warmup': 3 labelled prompts)
         -> round 1 c1 promoted (trained on 'train': 3 kept samples; 'pairs': 1 DPO pair)

    round 1, purpose train: prompts p0..p2 x 2 samples by c0, scored by exact_answer v1 and
        format v2; p0#0 also by exact_answer v2 (a rescore); p2#1 is unscorable (no answer)
    round 1, purpose eval: p0, p1 x 1 sample by c1; purpose baseline: p0 x 1 sample by base
    evaluations: base and c1 on 'heldout' with per-prompt results
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dataflywheel.db.ingest import (
    PromptRow,
    SampleRow,
    ScoreRow,
    insert_samples,
    insert_scores,
    upsert_prompts,
)
from dataflywheel.db.models import (
    Checkpoint,
    CheckpointDataset,
    Dataset,
    DatasetMember,
    Evaluation,
    EvaluationResult,
    Round,
    Run,
)
from dataflywheel.prompts import canonical_jsonl
from dataflywheel.spec import load_spec, spec_hash
from dataflywheel.store import LocalStore

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 5, "backend": "transformers"}
# (prompt, sample index) -> completion; p1#1 and p2#1 fail exact_answer, p2#1 is unscorable.
TRAIN_SAMPLES = {(0, 0): "4", (0, 1): "4 ", (1, 0): "6", (1, 1): "7", (2, 0): "8", (2, 1): "?"}
STATS = {
    "recipe": "rejection_sampling",
    "seen": 6,
    "kept": 3,
    "yield": 0.5,
    "counts": {"kept": 4, "failed": 2},
    "recipe_kept": 4,
    "filters": [
        {"filter": "dedup", "in": 4, "out": 4, "yield": 1.0, "removed": {"exact": 0, "near": 0}},
        {"filter": "decontaminate", "in": 4, "out": 3, "yield": 0.75,
         "removed": {"contaminated": 1}},
    ],
    "contaminated": 1,
    "diversity": {"rows": 3, "unique_texts": 3, "distinct_1": 1.0, "distinct_2": None},
}  # fmt: skip
MANIFEST = {
    "round_index": 1,
    "verifiers": {"exact_answer": "v1", "format": "v2"},
    "code": {"dataflywheel": "0.1.0", "git_commit": "c0ffee"},
    "seeds": {"run": 3, "round": 11},
}


def insert(conn: sa.Connection, model: type, rows: list[dict[str, Any]]) -> list[int]:
    table = model.__table__  # type: ignore[attr-defined]
    keys = {k for row in rows for k in row}
    rows = [{k: row.get(k) for k in keys} for row in rows]
    return list(conn.execute(sa.insert(table).returning(table.c.id), rows).scalars())


def _sample_ids(conn: sa.Connection, round_id: int, purpose: str) -> dict[tuple[int, int], int]:
    rows = conn.execute(
        sa.text(
            "SELECT prompt_id, sample_index, id FROM samples WHERE round_id = :r AND purpose = :p"
        ),
        {"r": round_id, "p": purpose},
    )
    return {(p, k): i for p, k, i in rows}


def seed_run(engine: sa.Engine, store: LocalStore) -> dict[str, Any]:
    """Write the run of the module docstring; returns its ids."""
    spec = load_spec(ROOT / "examples" / "rejection-sft.yaml")
    ids: dict[str, Any] = {"spec": spec.model_dump(mode="json"), "spec_hash": spec_hash(spec)}
    with engine.begin() as conn:
        run = ids["run"] = insert(
            conn,
            Run,
            [dict(name=spec.name, spec=ids["spec"], spec_hash=ids["spec_hash"],
                  status="succeeded")],
        )[0]  # fmt: skip
        by_hash = upsert_prompts(
            conn,
            [
                PromptRow(
                    prompt_set="addition",
                    split="train",
                    text=f"{i + 2} + {i + 2} =",
                    reference={"answer": str(2 * (i + 2))},
                    difficulty=1,
                )
                for i in range(3)
            ],
        )
        texts = {f"{i + 2} + {i + 2} =": i for i in range(3)}
        stored = conn.execute(sa.text("SELECT id, text FROM prompts")).all()
        prompts = ids["prompts"] = [0, 0, 0]
        for pid, text in stored:
            prompts[texts[text]] = pid
        assert sorted(prompts) == sorted(by_hash.values())
        r0, r1 = insert(
            conn,
            Round,
            [
                dict(run_id=run, index=0, seed=10, status="succeeded"),
                dict(run_id=run, index=1, seed=11, status="succeeded", manifest=MANIFEST,
                     manifest_digest="d" * 64),
            ],
        )  # fmt: skip
        ids.update(round0=r0, round1=r1)
        base = ids["base"] = insert(
            conn, Checkpoint, [dict(run_id=run, status="base", source_uri="builtin:tiny-llama")]
        )[0]
        c0 = ids["c0"] = insert(
            conn,
            Checkpoint,
            [dict(run_id=run, round_id=r0, parent_id=base, status="promoted", digest="a" * 64)],
        )[0]
        c1 = ids["c1"] = insert(
            conn,
            Checkpoint,
            [dict(run_id=run, round_id=r1, parent_id=c0, status="promoted", digest="b" * 64)],
        )[0]
        samples = [
            SampleRow(round_id=r1, prompt_id=prompts[p], checkpoint_id=c0, sample_index=k,
                      seed=100 + 2 * p + k, text=text, sampling_params=PARAMS,
                      prompt_tokens=5, completion_tokens=1, finish_reason="stop")
            for (p, k), text in TRAIN_SAMPLES.items()
        ] + [
            SampleRow(round_id=r1, prompt_id=prompts[p], checkpoint_id=c1, sample_index=0,
                      seed=200 + p, text=str(2 * (p + 2)), sampling_params=PARAMS,
                      purpose="eval")
            for p in range(2)
        ] + [
            SampleRow(round_id=r1, prompt_id=prompts[0], checkpoint_id=base, sample_index=0,
                      seed=300, text="5", sampling_params=PARAMS, purpose="baseline")
        ]  # fmt: skip
        insert_samples(conn, samples)
        train = _sample_ids(conn, r1, "train")
        sid = ids["train_samples"] = {(prompts.index(p), k): i for (p, k), i in train.items()}
        evals = {prompts.index(p): i for (p, _), i in _sample_ids(conn, r1, "eval").items()}
        baseline = next(iter(_sample_ids(conn, r1, "baseline").values()))
        ids.update(eval_samples=evals, baseline_sample=baseline)
        scores = []
        for (p, k), text in TRAIN_SAMPLES.items():
            ok = text.strip() == str(2 * (p + 2))
            if (p, k) == (2, 1):
                scores.append(
                    ScoreRow(
                        sample_id=sid[p, k],
                        verifier="exact_answer",
                        verifier_version="v1",
                        value=None,
                        passed=None,
                        status="unscorable",
                        reason="no_answer",
                    )
                )
            else:
                scores.append(
                    ScoreRow(
                        sample_id=sid[p, k],
                        verifier="exact_answer",
                        verifier_version="v1",
                        value=float(ok),
                        passed=ok,
                        reason=None if ok else "mismatch",
                        details={"answer": text.strip()},
                    )
                )
            scores.append(
                ScoreRow(
                    sample_id=sid[p, k],
                    verifier="format",
                    verifier_version="v2",
                    value=1.0,
                    passed=True,
                )
            )
        scores.append(
            ScoreRow(
                sample_id=sid[0, 0],
                verifier="exact_answer",
                verifier_version="v2",
                value=1.0,
                passed=True,
            )
        )
        for i in evals.values():
            scores.append(
                ScoreRow(
                    sample_id=i,
                    verifier="exact_answer",
                    verifier_version="v1",
                    value=1.0,
                    passed=True,
                )
            )
        scores.append(ScoreRow(sample_id=baseline, verifier="exact_answer",
                               verifier_version="v1", value=0.0, passed=False))  # fmt: skip
        insert_scores(conn, scores)
        ids["scores"] = len(scores)

        # The dataset files, as tasks/select.py writes them.
        prompt_text = {i: f"{i + 2} + {i + 2} =" for i in range(3)}
        warmup_rows = [{"prompt": prompt_text[i], "completion": str(2 * (i + 2))} for i in range(3)]
        kept = [(0, 0), (0, 1), (1, 0)]
        train_rows = [
            {"prompt": prompt_text[p], "completion": TRAIN_SAMPLES[p, k]} for p, k in kept
        ]
        pair_rows = [{"prompt": prompt_text[1], "chosen": "6", "rejected": "7"}]
        files = {
            name: store.put_bytes(canonical_jsonl(rows))
            for name, rows in (("warmup", warmup_rows), ("train", train_rows),
                               ("pairs", pair_rows))
        }  # fmt: skip
        ids["files"] = {name: ref.key for name, ref in files.items()}
        ids["rows"] = {"warmup": warmup_rows, "train": train_rows, "pairs": pair_rows}
        d_warmup, d_train, d_pairs = insert(
            conn,
            Dataset,
            [
                dict(run_id=run, round_id=r0, name="warmup", kind="sft", recipe="labelled",
                     digest=files["warmup"].digest, object_key=files["warmup"].key,
                     row_count=3, stats={"recipe": "labelled", "seen": 3, "kept": 3,
                                         "yield": 1.0}),
                dict(run_id=run, round_id=r1, name="train", kind="sft",
                     recipe="rejection_sampling", recipe_config=ids["spec"]["selection"],
                     digest=files["train"].digest, object_key=files["train"].key,
                     row_count=3, stats=STATS),
                dict(run_id=run, round_id=r1, name="pairs", kind="preference",
                     recipe="preference_pairs", digest=files["pairs"].digest,
                     object_key=files["pairs"].key, row_count=1, stats={}),
            ],
        )  # fmt: skip
        ids.update(d_warmup=d_warmup, d_train=d_train, d_pairs=d_pairs, kept=kept)
        insert(
            conn,
            DatasetMember,
            [dict(dataset_id=d_warmup, position=i, prompt_id=prompts[i], label=str(2 * (i + 2)))
             for i in range(3)]
            + [dict(dataset_id=d_train, position=i, sample_id=sid[pk], prompt_id=prompts[pk[0]])
               for i, pk in enumerate(kept)]
            + [dict(dataset_id=d_pairs, position=0, sample_id=sid[1, 0],
                    rejected_sample_id=sid[1, 1], prompt_id=prompts[1])],
        )  # fmt: skip
        conn.execute(
            sa.insert(CheckpointDataset.__table__),
            [
                dict(checkpoint_id=c0, dataset_id=d_warmup, share=1.0),
                dict(checkpoint_id=c1, dataset_id=d_train, share=0.7),
            ],
        )
        e_base, e_c1 = insert(
            conn,
            Evaluation,
            [
                dict(checkpoint_id=base, round_id=r1, eval_set="heldout",
                     metrics={"accuracy": 0.0, "k": 1}, primary_metric="accuracy",
                     primary_value=0.0),
                dict(checkpoint_id=c1, round_id=r1, eval_set="heldout",
                     metrics={"accuracy": 1.0, "k": 1}, primary_metric="accuracy",
                     primary_value=1.0),
            ],
        )  # fmt: skip
        ids.update(e_base=e_base, e_c1=e_c1)
        insert(
            conn,
            EvaluationResult,
            [dict(evaluation_id=e_base, prompt_id=prompts[0], passed=False, value=0.0,
                  details={"n": 1, "correct": 0, "sample_ids": [baseline]})]
            + [dict(evaluation_id=e_c1, prompt_id=prompts[p], passed=True, value=1.0,
                    details={"n": 1, "correct": 1, "sample_ids": [evals[p]]})
               for p in range(2)],
        )  # fmt: skip
    return ids


def add_bulk_samples(
    engine: sa.Engine,
    round_id: int,
    checkpoint_id: int,
    *,
    prompts: int,
    per_prompt: int,
    text_bytes: int,
    purpose: str = "train",
) -> int:
    """Add ``prompts * per_prompt`` samples of ``purpose`` of ``text_bytes`` characters each
    (and one exact_answer score per sample) to the round, fast: prompts through COPY, samples
    and scores generated inside PostgreSQL. Returns the number of samples."""
    with engine.begin() as conn:
        ids = upsert_prompts(
            conn,
            [PromptRow(prompt_set=f"bulk-{purpose}", split="train",
                       text=f"bulk prompt {i}: what is {i}?")
             for i in range(prompts)],
        )  # fmt: skip
        conn.execute(
            sa.text(
                """
                INSERT INTO samples (round_id, prompt_id, checkpoint_id, purpose, sample_index,
                                     seed, sampling_params, text, completion_tokens,
                                     finish_reason)
                SELECT :round_id, p.id, :checkpoint_id, :purpose, k, p.id * 1000 + k,
                       '{"temperature": 1.0}'::jsonb,
                       left(repeat(md5((p.id * 1000 + k)::text), :reps), :text_bytes),
                       :text_bytes / 4, 'length'
                FROM unnest(CAST(:prompt_ids AS bigint[])) AS p(id),
                     generate_series(0, :per_prompt - 1) AS k
                """
            ),
            {
                "round_id": round_id,
                "checkpoint_id": checkpoint_id,
                "prompt_ids": sorted(ids.values()),
                "per_prompt": per_prompt,
                "text_bytes": text_bytes,
                "reps": text_bytes // 32 + 1,
                "purpose": purpose,
            },
        )
        conn.execute(
            sa.text(
                """
                INSERT INTO scores (sample_id, verifier, verifier_version, value, passed)
                SELECT s.id, 'exact_answer', 'v1', (s.id % 2)::float8, s.id % 2 = 1
                FROM samples s JOIN prompts p ON p.id = s.prompt_id
                WHERE s.round_id = :round_id AND p.prompt_set = :prompt_set
                """
            ),
            {"round_id": round_id, "prompt_set": f"bulk-{purpose}"},
        )
    return prompts * per_prompt
