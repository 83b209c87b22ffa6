"""Bulk COPY ingestion on real Postgres: exact round trips, idempotency, atomic failures."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataflywheel.db import ingest
from dataflywheel.db.ingest import (
    IngestError,
    KeyedScoreRow,
    PromptRow,
    SampleRow,
    ScoreRow,
)
from dataflywheel.db.models import Checkpoint, Round, Run
from dataflywheel.db.session import session_scope

AWKWARD_TEXTS = [
    "",
    "\t",
    "\n",
    "\r\n",
    "\\",
    "\\N",  # COPY's NULL marker, as literal text
    "\\.",  # COPY's end-of-data marker, as literal text
    "a\tb\nc\\d\re",
    "\"double\" 'single' `back`",
    "ünïcödé — 漢字 — עברית — 🙂👍🏽 — e\u0301",
    "\x01\x1f\x7f control characters",
    "  leading and trailing  ",
    "NULL",
    "\u2028\u2029\ufeff",
    "x" * 2000,
]

PARAMS = [
    {"temperature": 0.7, "top_p": 0.95, "max_tokens": 256, "backend": "vllm", "dtype": "bf16"},
    {},
    {"stop": ["\n\n", "\\end", "\t"], "nested": {"ünï": [1, 2.5, None, True, 'a"b']}},
    {"temperature": 0.0, "seed": 2**40, "logprobs": None},
]


@dataclass(frozen=True)
class Parents:
    run_id: int
    round_ids: tuple[int, int]
    checkpoint_id: int


@pytest.fixture
def parents(engine: sa.Engine) -> Parents:
    with session_scope(engine) as s:
        run = Run(name="r", spec={}, spec_hash="0" * 64)
        s.add(run)
        s.flush()
        rounds = [Round(run_id=run.id, index=i, seed=i) for i in range(2)]
        base = Checkpoint(run_id=run.id, status="base", source_uri="builtin:tiny")
        s.add_all([*rounds, base])
        s.flush()
        return Parents(run.id, (rounds[0].id, rounds[1].id), base.id)


def _prompts(n: int) -> list[PromptRow]:
    return [
        PromptRow(
            prompt_set="arith",
            split="train",
            text=f"What is {i} + {i}?",
            reference={"answer": str(2 * i)},
            difficulty=i % 5,
        )
        for i in range(n)
    ]


def _store_prompts(engine: sa.Engine, n: int) -> list[int]:
    rows = _prompts(n)
    with session_scope(engine) as s:
        ids = ingest.upsert_prompts(s, rows)
    return [ids[r.content_hash] for r in rows]


def _samples(round_id: int, prompt_ids: list[int], checkpoint_id: int, k: int) -> list[SampleRow]:
    rows = []
    for n, prompt_id in enumerate(prompt_ids):
        for j in range(k):
            i = n * k + j
            awkward = AWKWARD_TEXTS[i % len(AWKWARD_TEXTS)]
            rows.append(
                SampleRow(
                    round_id=round_id,
                    prompt_id=prompt_id,
                    checkpoint_id=checkpoint_id,
                    sample_index=j,
                    seed=i * 7919,
                    text=awkward if i % 2 == 0 else f"answer {i}:\t{awkward}\n",
                    sampling_params=PARAMS[i % len(PARAMS)],
                    purpose="train" if i % 3 else "eval",
                    prompt_tokens=None if i % 5 == 0 else 10 + i % 90,
                    completion_tokens=None if i % 7 == 0 else i % 512,
                    finish_reason=None if i % 4 == 0 else ("stop" if i % 3 else "length"),
                )
            )
    return rows


SAMPLE_COLUMNS = (
    "round_id, prompt_id, checkpoint_id, purpose, sample_index, seed, sampling_params, text,"
    " prompt_tokens, completion_tokens, finish_reason"
)


def _stored_samples(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        result = conn.execute(
            sa.text(
                f"SELECT {SAMPLE_COLUMNS} FROM samples"
                " ORDER BY round_id, prompt_id, sample_index, purpose"
            )
        )
        return [tuple(row) for row in result]


def _as_stored(row: SampleRow) -> tuple[object, ...]:
    return (
        row.round_id,
        row.prompt_id,
        row.checkpoint_id,
        row.purpose,
        row.sample_index,
        row.seed,
        row.sampling_params,
        row.text,
        row.prompt_tokens,
        row.completion_tokens,
        row.finish_reason,
    )


def _count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_100k_samples_round_trip_exactly_and_a_rerun_inserts_nothing(
    engine: sa.Engine, parents: Parents
) -> None:
    prompt_ids = _store_prompts(engine, 12_500)
    rows = _samples(parents.round_ids[0], prompt_ids, parents.checkpoint_id, k=8)
    assert len(rows) == 100_000

    with session_scope(engine) as s:
        counts = ingest.insert_samples(s, iter(rows))
    assert (counts.received, counts.inserted, counts.skipped) == (100_000, 100_000, 0)

    expected = sorted(map(_as_stored, rows), key=lambda r: (r[0], r[1], r[4], r[3]))
    assert _stored_samples(engine) == expected

    with session_scope(engine) as s:
        again = ingest.insert_samples(s, rows)
    assert (again.received, again.inserted, again.skipped) == (100_000, 0, 100_000)
    assert _count(engine, "samples") == 100_000


def test_partial_duplicates_insert_only_the_new_rows(engine: sa.Engine, parents: Parents) -> None:
    prompt_ids = _store_prompts(engine, 10)
    rows = _samples(parents.round_ids[0], prompt_ids, parents.checkpoint_id, k=4)
    with session_scope(engine) as s:
        assert ingest.insert_samples(s, rows[:25]).inserted == 25

    # rows 20..39, with row 30 twice: 5 already stored, 1 repeated within the batch.
    batch = rows[20:] + [rows[30]]
    with session_scope(engine) as s:
        counts = ingest.insert_samples(s, batch)
    assert (counts.received, counts.inserted, counts.skipped) == (21, 15, 6)
    assert _stored_samples(engine) == sorted(
        map(_as_stored, rows), key=lambda r: (r[0], r[1], r[4], r[3])
    )


def test_an_empty_batch_is_a_no_op(engine: sa.Engine) -> None:
    with session_scope(engine) as s:
        assert ingest.insert_samples(s, []) == ingest.IngestCounts(0, 0)
        assert ingest.upsert_prompts(s, []) == {}


def _sample_ids_by_key(engine: sa.Engine) -> dict[tuple[int, str, int, int], int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT round_id, purpose, prompt_id, sample_index, id FROM samples")
        )
        return {(r[0], r[1], r[2], r[3]): r[4] for r in rows}


def test_scores_by_id_and_by_natural_key(engine: sa.Engine, parents: Parents) -> None:
    prompt_ids = _store_prompts(engine, 50)
    samples = _samples(parents.round_ids[1], prompt_ids, parents.checkpoint_id, k=4)
    with session_scope(engine) as s:
        ingest.insert_samples(s, samples)
    ids = _sample_ids_by_key(engine)

    keyed = [
        KeyedScoreRow(
            round_id=r.round_id,
            purpose=r.purpose,
            prompt_id=r.prompt_id,
            sample_index=r.sample_index,
            verifier="exact_answer",
            verifier_version="v1",
            value=float(i % 2),
            passed=i % 2 == 1,
            reason=None if i % 2 else "mismatch",
            details={"extracted": f"\t{i}\\"},
        )
        for i, r in enumerate(samples)
    ]
    unscorable = [
        ScoreRow(
            sample_id=ids[(r.round_id, r.purpose, r.prompt_id, r.sample_index)],
            verifier="format",
            verifier_version="v2",
            value=None,
            passed=None,
            status="unscorable",
            reason="no_answer",
        )
        for r in samples[:10]
    ]
    with session_scope(engine) as s:
        assert ingest.insert_scores_by_key(s, keyed) == ingest.IngestCounts(200, 200)
        assert ingest.insert_scores(s, unscorable) == ingest.IngestCounts(10, 10)

    with engine.connect() as conn:
        stored = {
            (r.sample_id, r.verifier): r
            for r in conn.execute(
                sa.text(
                    "SELECT sample_id, verifier, verifier_version, value, passed, status,"
                    " reason, details FROM scores"
                )
            )
        }
    assert len(stored) == 210
    for i, r in enumerate(samples):
        got = stored[(ids[(r.round_id, r.purpose, r.prompt_id, r.sample_index)], "exact_answer")]
        assert (got.value, got.passed, got.status, got.reason, got.details) == (
            float(i % 2),
            i % 2 == 1,
            "scored",
            None if i % 2 else "mismatch",
            {"extracted": f"\t{i}\\"},
        )
    assert stored[(unscorable[0].sample_id, "format")].status == "unscorable"

    # Re-scoring is a no-op by either path: by key, and by id for the same sample/verifier.
    by_id = [
        ScoreRow(
            sample_id=ids[(r.round_id, r.purpose, r.prompt_id, r.sample_index)],
            verifier="exact_answer",
            verifier_version="v1",
            value=1.0,
            passed=True,
        )
        for r in samples[:5]
    ]
    with session_scope(engine) as s:
        assert ingest.insert_scores_by_key(s, keyed[:100]).skipped == 100
        assert ingest.insert_scores(s, by_id).skipped == 5
    assert _count(engine, "scores") == 210


def test_a_score_for_an_unknown_sample_key_rejects_the_batch(
    engine: sa.Engine, parents: Parents
) -> None:
    prompt_ids = _store_prompts(engine, 3)
    samples = _samples(parents.round_ids[0], prompt_ids, parents.checkpoint_id, k=2)
    with session_scope(engine) as s:
        ingest.insert_samples(s, samples)

    def score(r: SampleRow, sample_index: int | None = None) -> KeyedScoreRow:
        return KeyedScoreRow(
            round_id=r.round_id,
            purpose=r.purpose,
            prompt_id=r.prompt_id,
            sample_index=r.sample_index if sample_index is None else sample_index,
            verifier="exact_answer",
            verifier_version="v1",
            value=1.0,
            passed=True,
        )

    batch = [score(r) for r in samples]
    batch.insert(4, score(samples[0], sample_index=99))
    with pytest.raises(IngestError) as caught, session_scope(engine) as s:
        ingest.insert_scores_by_key(s, batch)
    assert caught.value.positions == (4,)
    assert "no sample has this (round_id, purpose, prompt_id, sample_index)" in str(caught.value)
    assert "sample_index=99" in str(caught.value)
    assert _count(engine, "scores") == 0


def test_a_missing_prompt_rejects_the_whole_batch_and_names_the_row(
    engine: sa.Engine, parents: Parents
) -> None:
    prompt_ids = _store_prompts(engine, 20)
    good = _samples(parents.round_ids[0], prompt_ids, parents.checkpoint_id, k=2)
    bad_rows = list(good)
    for position in (17, 33):
        bad_rows[position] = SampleRow(
            round_id=parents.round_ids[0],
            prompt_id=999_999,
            checkpoint_id=parents.checkpoint_id,
            sample_index=position,
            seed=0,
            text="orphan",
            sampling_params={},
        )

    with Session(engine) as s:
        # Work done earlier in the same transaction survives a rejected batch ...
        assert ingest.insert_samples(s, good[:5]).inserted == 5
        with pytest.raises(IngestError) as caught:
            ingest.insert_samples(s, bad_rows)
        assert caught.value.positions == (17, 33)
        assert caught.value.constraint == "fk_samples_prompt_id_prompts"
        message = str(caught.value)
        assert "nothing inserted" in message and "prompt_id=999999" in message
        assert "17 (" in message and "33 (" in message
        # ... none of the rejected batch is there, and the transaction is still usable.
        assert s.execute(sa.text("SELECT count(*) FROM samples")).scalar_one() == 5
        assert ingest.insert_samples(s, good[5:10]).inserted == 5
        s.rollback()
    assert _count(engine, "samples") == 0

    # Through session_scope the whole unit of work rolls back.
    with pytest.raises(IngestError), session_scope(engine) as s:
        ingest.insert_samples(s, good[:5])
        ingest.insert_samples(s, bad_rows)
    assert _count(engine, "samples") == 0


def test_a_check_violation_names_the_row(engine: sa.Engine, parents: Parents) -> None:
    prompt_ids = _store_prompts(engine, 4)
    rows = _samples(parents.round_ids[0], prompt_ids, parents.checkpoint_id, k=1)
    rows[2] = replace(rows[2], purpose="bogus")
    with pytest.raises(IngestError) as caught, session_scope(engine) as s:
        ingest.insert_samples(s, rows)
    assert caught.value.positions == (2,)
    assert caught.value.constraint == "ck_samples_purpose"
    assert "purpose='bogus'" in str(caught.value)
    assert _count(engine, "samples") == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("text", "NUL \x00 byte"), ("sampling_params", {"temperature": math.nan})],
)
def test_a_row_that_cannot_be_copied_is_named(
    engine: sa.Engine, parents: Parents, field: str, value: object
) -> None:
    prompt_ids = _store_prompts(engine, 5)
    rows = _samples(parents.round_ids[0], prompt_ids, parents.checkpoint_id, k=1)
    rows[3] = replace(rows[3], **{field: value})
    with pytest.raises(IngestError) as caught, session_scope(engine) as s:
        ingest.insert_samples(s, rows)
    assert caught.value.positions == (3,)
    assert "input row 3" in str(caught.value)
    assert _count(engine, "samples") == 0


def test_upsert_prompts_is_idempotent_and_returns_every_id(engine: sa.Engine) -> None:
    first = _prompts(30)
    with session_scope(engine) as s:
        ids = ingest.upsert_prompts(s, first[:20])
    assert len(set(ids.values())) == 20

    with session_scope(engine) as s:
        # Ten stored, ten new, one repeated within the batch, one differing only in metadata.
        again = [*first, first[0], replace(first[1], metadata={"x": 1})]
        all_ids = ingest.upsert_prompts(s, again)
    assert len(all_ids) == 30
    assert {h: all_ids[h] for h in ids} == ids
    assert _count(engine, "prompts") == 30

    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT text, text_hash, reference, difficulty, metadata"
                " FROM prompts WHERE id = :id"
            ),
            {"id": all_ids[first[25].content_hash]},
        ).one()
    assert tuple(row) == (
        first[25].text,
        ingest.text_hash(first[25].text),
        {"answer": "50"},
        0,
        {},
    )


def test_prompt_content_hash_is_canonical() -> None:
    base = dict(prompt_set="code", split="train", text="def f():\n\tpass", tests="assert f()")
    a = ingest.prompt_content_hash(**base, reference={"a": 1, "b": [1, 2]}, difficulty=3)
    b = ingest.prompt_content_hash(**base, reference={"b": [1, 2], "a": 1}, difficulty=3)
    assert a == b and len(a) == 64
    assert a != ingest.prompt_content_hash(**base, reference={"a": 1, "b": [1, 2]}, difficulty=4)
    assert a != ingest.prompt_content_hash(
        **{**base, "split": "eval"}, reference={"a": 1, "b": [1, 2]}, difficulty=3
    )
    # Pinned: a change to the canonical form would silently fork every stored prompt.
    assert (
        ingest.prompt_content_hash(
            prompt_set="s", split="train", text="1+1?", reference=None, tests=None, difficulty=None
        )
        == hashlib.sha256(
            b'{"difficulty":null,"prompt_set":"s","reference":null,"split":"train",'
            b'"tests":null,"text":"1+1?"}'
        ).hexdigest()
    )
    assert ingest.text_hash("é") == hashlib.sha256("é".encode()).hexdigest()


def test_works_on_a_connection_and_flushes_a_session_first(engine: sa.Engine) -> None:
    with Session(engine) as s:
        s.add(Run(id=1000, name="pending", spec={}, spec_hash="1" * 64))
        s.flush()
        # Explicit ids and no flush: ingestion must flush these before COPY references them.
        s.add(Round(id=1001, run_id=1000, index=0, seed=0))
        s.add(Checkpoint(id=1002, run_id=1000, status="base"))
        prompt_ids = list(ingest.upsert_prompts(s, _prompts(2)).values())
        counts = ingest.insert_samples(s, _samples(1001, prompt_ids, 1002, k=2))
        assert counts.inserted == 4
        s.commit()

    with engine.begin() as conn:
        assert len(ingest.upsert_prompts(conn, _prompts(3))) == 3  # one new, two known
    assert _count(engine, "prompts") == 3

    # A plain connect() + commit(): ingestion begins the transaction that commit() ends.
    with engine.connect() as conn:
        assert len(ingest.upsert_prompts(conn, _prompts(4))) == 4
        conn.commit()
    assert _count(engine, "prompts") == 4


def test_an_autocommit_connection_is_refused(db_url: str) -> None:
    libpq = sa.engine.make_url(db_url).set(drivername="postgresql")
    url = libpq.render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as pg, pytest.raises(ValueError, match="autocommit"):
        ingest.upsert_prompts(pg, _prompts(1))


def _rows_then_boom(rows: list[SampleRow]) -> Iterator[SampleRow]:
    yield from rows
    raise RuntimeError("the shard reader failed")


def test_an_error_in_the_caller_s_iterator_propagates_and_inserts_nothing(
    engine: sa.Engine, parents: Parents
) -> None:
    prompt_ids = _store_prompts(engine, 3)
    rows = _samples(parents.round_ids[0], prompt_ids, parents.checkpoint_id, k=1)
    with Session(engine) as s:
        with pytest.raises(RuntimeError, match="shard reader"):
            ingest.insert_samples(s, _rows_then_boom(rows))
        assert s.execute(sa.text("SELECT count(*) FROM samples")).scalar_one() == 0
        assert ingest.insert_samples(s, rows).inserted == 3
        s.commit()
    assert _count(engine, "samples") == 3
