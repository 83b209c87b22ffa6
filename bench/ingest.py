"""Benchmark: bulk ingestion (ours vs raw COPY) and checkpoint ancestry with 1M samples.

Runs in: a developer shell (not a test). It prints figures against the targets:

- ingestion through ``dataflywheel.db.ingest`` >= 100k samples/s and >= 0.7x a raw psycopg
  ``COPY`` of the same rows straight into the table;
- ``lineage.checkpoint_ancestry`` of the deepest checkpoint < 200 ms (median) with 1M
  samples in the database.

The database is fresh: a new database on the server of ``FLYWHEEL_DATABASE_URL`` when set
(created and dropped here), else an embedded PostgreSQL in a temporary directory.

    .venv/bin/python bench/ingest.py [--n 100000] [--repeat 3] [--lineage-samples 1000000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from dataflywheel.db import embedded, ingest, lineage, migrate
from dataflywheel.db.ingest import KeyedScoreRow, PromptRow, SampleRow, ScoreRow
from dataflywheel.db.session import make_engine, normalize_url, session_scope

SAMPLES_PER_PROMPT = 8
PARAMS = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 256, "backend": "vllm", "dtype": "bf16"}
SAMPLE_COLUMNS = (
    "round_id, prompt_id, checkpoint_id, purpose, sample_index, seed, sampling_params, text,"
    " prompt_tokens, completion_tokens, finish_reason"
)
SCORE_COLUMNS = "sample_id, verifier, verifier_version, value, passed, status, reason, details"


# --------------------------------------------------------------------------- database


@contextmanager
def fresh_database() -> Iterator[tuple[str, bool]]:
    """SQLAlchemy URL of a new, migrated database (removed afterwards), and whether its server
    runs on this machine (then its backends' CPU time can be read from /proc)."""
    configured = os.environ.get("FLYWHEEL_DATABASE_URL")
    if configured:
        url = make_url(normalize_url(configured))
        name = f"flywheel_bench_{uuid.uuid4().hex[:8]}"
        admin = url.set(drivername="postgresql", database="postgres")
        admin_url = admin.render_as_string(hide_password=False)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _migrated(url.set(database=name).render_as_string(hide_password=False)), False
        finally:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as tmp:
        Path(tmp).chmod(0o755)  # as root, the embedded server runs as its own user
        pgdata = Path(tmp) / "postgres"
        server = embedded.start(pgdata)
        try:
            yield _migrated(server.url), True
        finally:
            embedded.stop(pgdata)


def _migrated(url: str) -> str:
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def truncate(engine: sa.Engine, *tables: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


def copy_rows(
    conn: psycopg.Connection[Any], table: str, columns: str, rows: Iterable[tuple[object, ...]]
) -> None:
    """Plain psycopg COPY: the baseline, and the bulk loader for the lineage data."""
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds on the clock
    cpu: float  # CPU seconds of this process plus the server backend doing the work


def backend_cpu(pid: int | None) -> float:
    """CPU seconds a local server backend has used (0.0 for a remote server). schedstat
    counts nanoseconds; /proc/<pid>/stat only 10 ms ticks, too coarse for one query."""
    if pid is None:
        return 0.0
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def measure(fn: Callable[[], object], backend: int | None) -> Timing:
    """Wall and CPU time of ``fn``. Other work shares these cores, so the wall clock
    includes waiting for a CPU; the CPU time is what the work itself cost."""
    wall, cpu, server = time.perf_counter(), time.process_time(), backend_cpu(backend)
    fn()
    return Timing(
        wall=time.perf_counter() - wall,
        cpu=time.process_time() - cpu + backend_cpu(backend) - server,
    )


def median(timings: list[Timing]) -> Timing:
    return Timing(
        statistics.median(t.wall for t in timings), statistics.median(t.cpu for t in timings)
    )


# --------------------------------------------------------------------------- ingestion


def completion(i: int) -> str:
    a, b = i % 997, i % 89
    return (
        f"Let me think step by step.\n\t{a} + {b} = {a + b}\n"
        f'Check: {a + b} - {b} = {a} \\ "ok"\nThe answer is {a + b}.'
    ) * 2


def bench_ingestion(url: str, local: bool, n: int, repeat: int) -> dict[str, Timing]:
    """Median time of each path over ``repeat`` runs, each into freshly truncated tables."""
    # One connection each for our path and the raw baseline, so each has one backend to meter.
    engine = make_engine(url, poolclass=sa.pool.StaticPool)
    raw = psycopg.connect(libpq(url))
    with engine.connect() as conn:
        ours_pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() if local else None
    raw_pid = raw.info.backend_pid if local else None
    pids = {"ours": ours_pid, "keyed": ours_pid, "raw": raw_pid, "plain": raw_pid}
    with session_scope(engine) as s:
        s.execute(sa.text("INSERT INTO runs (id, name, spec, spec_hash) VALUES (1, 'b', '{}', '')"))
        s.execute(sa.text("INSERT INTO rounds (id, run_id, index, seed) VALUES (1, 1, 0, 0)"))
        s.execute(sa.text("INSERT INTO checkpoints (id, run_id, status) VALUES (1, 1, 'base')"))
        # The ceiling: the same columns with no foreign keys, checks or indexes.
        s.execute(
            sa.text(
                "CREATE TABLE plain_samples (LIKE samples INCLUDING DEFAULTS INCLUDING IDENTITY)"
            )
        )
        prompts = [
            PromptRow(prompt_set="arith", split="train", text=f"What is {i} + {i % 89}?")
            for i in range(-(-n // SAMPLES_PER_PROMPT))
        ]
        ids = ingest.upsert_prompts(s, prompts)
    rows = [
        SampleRow(
            round_id=1,
            prompt_id=ids[prompts[i // SAMPLES_PER_PROMPT].content_hash],
            checkpoint_id=1,
            sample_index=i % SAMPLES_PER_PROMPT,
            seed=i,
            text=completion(i),
            sampling_params=PARAMS,
            prompt_tokens=40,
            completion_tokens=60 + i % 50,
            finish_reason="stop",
        )
        for i in range(n)
    ]
    # The same row conversion on both sides, so the ratio measures the database path alone.
    sample_tuple, score_tuple = ingest._sample_tuple, ingest._score_tuple

    def samples_ours() -> None:
        with session_scope(engine) as s:
            assert ingest.insert_samples(s, rows).inserted == n

    def samples_raw(table: str = "samples") -> None:
        copy_rows(raw, table, SAMPLE_COLUMNS, map(sample_tuple, rows))
        raw.commit()

    times: dict[str, list[Timing]] = {}

    def run(name: str, fn: Callable[[], object]) -> None:
        times.setdefault(name, []).append(measure(fn, pids[name.split("_")[1]]))

    for i in range(repeat):
        # Alternate the order so neither side always runs on a warmer cache.
        order = [("samples_ours", samples_ours), ("samples_raw", samples_raw)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            truncate(engine, "samples")
            run(name, fn)
        truncate(engine, "plain_samples")
        run("samples_plain", lambda: samples_raw("plain_samples"))

    # Scores need their samples: load those once, then time the scores alone.
    truncate(engine, "samples", "plain_samples")
    samples_ours()
    with engine.connect() as conn:
        sample_ids = conn.execute(
            sa.text("SELECT id FROM samples ORDER BY prompt_id, sample_index")
        ).scalars()
        scores = [
            ScoreRow(
                sample_id=sample_id,
                verifier="exact_answer",
                verifier_version="v1",
                value=float(i % 3 == 0),
                passed=i % 3 == 0,
                reason=None if i % 3 == 0 else "mismatch",
                details={"extracted": str(i % 997)},
            )
            for i, sample_id in enumerate(sample_ids)
        ]
    keyed = [
        KeyedScoreRow(
            round_id=r.round_id,
            prompt_id=r.prompt_id,
            sample_index=r.sample_index,
            verifier=s.verifier,
            verifier_version=s.verifier_version,
            value=s.value,
            passed=s.passed,
            reason=s.reason,
            details=s.details,
        )
        for r, s in zip(rows, scores, strict=True)
    ]

    def scores_ours() -> None:
        with session_scope(engine) as s:
            assert ingest.insert_scores(s, scores).inserted == n

    def scores_keyed() -> None:
        with session_scope(engine) as s:
            assert ingest.insert_scores_by_key(s, keyed).inserted == n

    def scores_raw() -> None:
        copy_rows(raw, "scores", SCORE_COLUMNS, map(score_tuple, scores))
        raw.commit()

    for i in range(repeat):
        order = [
            ("scores_ours", scores_ours),
            ("scores_keyed", scores_keyed),
            ("scores_raw", scores_raw),
        ]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            truncate(engine, "scores")
            run(name, fn)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE plain_samples"))
    raw.close()
    engine.dispose()
    return {name: median(values) for name, values in times.items()}


# --------------------------------------------------------------------------- lineage


def load_lineage(url: str, total_samples: int, runs: int = 4, rounds: int = 5) -> dict[str, int]:
    """Runs of rounds of STaR-like data, bulk-loaded with COPY. Per round every prompt gets 8
    samples from the current promoted checkpoint; an sft set keeps one passing sample per
    prompt, a preference set pairs a pass with a fail for every other prompt, and each round's
    checkpoint also replays the previous round's sft set. Every sample has an exact-answer
    score, a quarter also a format score; the last round's checkpoint is rejected."""
    prompts_per_round = total_samples // (runs * rounds * SAMPLES_PER_PROMPT)
    engine = make_engine(url)
    truncate(engine, "runs")  # cascades to everything but prompts
    with session_scope(engine) as s:
        known = list(s.execute(sa.text("SELECT id FROM prompts ORDER BY id")).scalars())
        more = [
            PromptRow(prompt_set="lineage", split="train", text=f"question {i}")
            for i in range(max(0, prompts_per_round - len(known)))
        ]
        prompt_ids = (known + list(ingest.upsert_prompts(s, more).values()))[:prompts_per_round]
    engine.dispose()

    sample_id = 0
    deepest = 0
    with psycopg.connect(libpq(url)) as conn:
        for run in range(runs):
            run_id = _insert(conn, "runs", name=f"run{run}", spec="{}", spec_hash="")
            parent = _insert(conn, "checkpoints", run_id=run_id, status="base")
            previous_sft: int | None = None
            for index in range(rounds):
                round_id = _insert(conn, "rounds", run_id=run_id, index=index, seed=0)
                samples, scores, sft, pairs = [], [], [], []
                for prompt_id in prompt_ids:
                    passing, failing = [], []
                    for k in range(SAMPLES_PER_PROMPT):
                        sample_id += 1
                        passed = (sample_id * 2654435761) % 100 < 30 + 10 * index
                        (passing if passed else failing).append(sample_id)
                        samples.append((sample_id, round_id, prompt_id, parent, k, f"answer {k}"))
                        scores.append((sample_id, "exact_answer", "v1", float(passed), passed))
                        if sample_id % 4 == 0:
                            scores.append((sample_id, "format", "v1", 1.0, True))
                    if passing:
                        sft.append((passing[0], None))
                        if failing and prompt_id % 2 == 0:
                            pairs.append((passing[-1], failing[0]))
                copy_rows(
                    conn,
                    "samples",
                    "id, round_id, prompt_id, checkpoint_id, sample_index, text, seed,"
                    " sampling_params",
                    (row + (row[0], '{"temperature": 0.8}') for row in samples),
                )
                copy_rows(
                    conn, "scores", "sample_id, verifier, verifier_version, value, passed", scores
                )
                trained_on = [
                    _dataset(conn, run_id, round_id, "sft", "sft", sft),
                    _dataset(conn, run_id, round_id, "pairs", "preference", pairs),
                ]
                status = "rejected" if index == rounds - 1 else "promoted"
                checkpoint = _insert(
                    conn,
                    "checkpoints",
                    run_id=run_id,
                    round_id=round_id,
                    parent_id=parent,
                    status=status,
                )
                for dataset_id in trained_on + ([previous_sft] if previous_sft else []):
                    conn.execute(
                        "INSERT INTO checkpoint_datasets (checkpoint_id, dataset_id)"
                        " VALUES (%s, %s)",
                        (checkpoint, dataset_id),
                    )
                previous_sft = trained_on[0]
                deepest = checkpoint
                parent = checkpoint if status == "promoted" else parent
            conn.commit()
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        # Explicit ids left the identity sequence behind; and VACUUM ANALYZE does what
        # autovacuum would have done by the time anyone asks for lineage.
        conn.execute("SELECT setval(pg_get_serial_sequence('samples', 'id'), max(id)) FROM samples")
        conn.execute("VACUUM ANALYZE")
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("samples", "scores", "dataset_members", "checkpoints")
        }
    return {"deepest_checkpoint": deepest, "prompt_id": prompt_ids[0], **counts}


def _insert(conn: psycopg.Connection[Any], table: str, **values: object) -> int:
    columns = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    row = conn.execute(
        f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING id", tuple(values.values())
    ).fetchone()
    assert row is not None
    return int(row[0])


def _dataset(
    conn: psycopg.Connection[Any],
    run_id: int,
    round_id: int,
    name: str,
    kind: str,
    members: list[tuple[int, int | None]],
) -> int:
    dataset_id = _insert(
        conn,
        "datasets",
        run_id=run_id,
        round_id=round_id,
        name=name,
        kind=kind,
        digest="",
        object_key="",
        row_count=len(members),
    )
    copy_rows(
        conn,
        "dataset_members",
        "dataset_id, position, sample_id, rejected_sample_id",
        ((dataset_id, pos, chosen, rejected) for pos, (chosen, rejected) in enumerate(members)),
    )
    return dataset_id


def bench_lineage(url: str, local: bool, total_samples: int, runs: int) -> dict[str, Any]:
    loaded = load_lineage(url, total_samples)
    engine = make_engine(url, poolclass=sa.pool.StaticPool)
    checkpoint = loaded["deepest_checkpoint"]
    results: dict[str, Any] = {"loaded": loaded}
    with Session(engine) as s:
        pid = s.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() if local else None
        ancestry = lineage.checkpoint_ancestry(s, checkpoint)  # warm the cache once
        results["training_samples"] = sum(src.samples for src in ancestry.sources)
        results["chain"] = len(ancestry.chain)

        def timings(fn: Callable[[], object], times: int) -> Timing:
            return median([measure(fn, pid) for _ in range(times)])

        results["ancestry"] = timings(lambda: lineage.checkpoint_ancestry(s, checkpoint), runs)
        results["descendants"] = timings(
            lambda: lineage.prompt_descendants(s, loaded["prompt_id"]), runs
        )
        results["drilldown"] = timings(
            lambda: sum(1 for _ in lineage.iter_training_sample_ids(s, checkpoint)), 3
        )
    engine.dispose()
    return results


# --------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def report(
    args: argparse.Namespace, local: bool, times: dict[str, Timing], lin: dict[str, Any]
) -> None:
    rows: list[tuple[str, str, str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "" if ok is None else ("ok" if ok else "MISS")

    def rate(label: str, key: str, rows_per_run: int, target: float | None = None) -> None:
        wall, cpu = rows_per_run / times[key].wall, rows_per_run / times[key].cpu
        rows.append(
            (
                label,
                f"{wall:,.0f} rows/s",
                f"{cpu:,.0f} rows/s" if local else "n/a",
                f">= {target:,.0f}" if target else "",
                verdict(None if target is None else wall >= target)
                + (f" / {verdict(cpu >= target)}" if target and local else ""),
            )
        )

    def ratio(label: str, ours: str, raw: str, target: float | None = None) -> None:
        wall = times[raw].wall / times[ours].wall
        cpu = times[raw].cpu / times[ours].cpu
        rows.append(
            (
                label,
                f"{wall:.2f}x",
                f"{cpu:.2f}x" if local else "n/a",
                f">= {target:.2f}x" if target else "",
                verdict(None if target is None else wall >= target)
                + (f" / {verdict(cpu >= target)}" if target and local else ""),
            )
        )

    def latency(label: str, key: str, target_ms: float | None = None) -> None:
        wall, cpu = lin[key].wall * 1000, lin[key].cpu * 1000
        rows.append(
            (
                label,
                f"{wall:.0f} ms",
                f"{cpu:.0f} ms" if local else "n/a",
                f"< {target_ms:.0f} ms" if target_ms else "",
                verdict(None if target_ms is None else wall < target_ms)
                + (f" / {verdict(cpu < target_ms)}" if target_ms and local else ""),
            )
        )

    n = args.n
    # N samples then their N scores, end to end.
    for path in ("ours", "raw"):
        times[f"both_{path}"] = Timing(
            times[f"samples_{path}"].wall + times[f"scores_{path}"].wall,
            times[f"samples_{path}"].cpu + times[f"scores_{path}"].cpu,
        )
    rate("samples: ours (insert_samples)", "samples_ours", n, 100_000)
    rate("samples: raw COPY into samples", "samples_raw", n)
    ratio("samples: ours / raw COPY", "samples_ours", "samples_raw", 0.7)
    rate("samples: raw COPY, same table without FKs/indexes", "samples_plain", n)
    rate("scores: ours (insert_scores)", "scores_ours", n)
    rate("scores: ours by natural key (insert_scores_by_key)", "scores_keyed", n)
    rate("scores: raw COPY into scores", "scores_raw", n)
    ratio("scores: ours / raw COPY", "scores_ours", "scores_raw")
    ratio("scores: ours by key / raw COPY", "scores_keyed", "scores_raw")
    rate("samples + scores: ours", "both_ours", 2 * n, 100_000)
    rate("samples + scores: raw COPY", "both_raw", 2 * n)
    ratio("samples + scores: ours / raw COPY", "both_ours", "both_raw", 0.7)
    latency(
        f"checkpoint_ancestry: {lin['chain']} checkpoints, "
        f"{lin['training_samples']:,} training samples",
        "ancestry",
        200,
    )
    latency("prompt_descendants: one prompt used in 20 rounds", "descendants")
    latency("iter_training_sample_ids: the whole lineage", "drilldown")

    loaded = lin["loaded"]
    print(
        f"\ningestion: {n:,} rows per measurement, median of {args.repeat}; lineage: "
        f"{loaded['samples']:,} samples, {loaded['scores']:,} scores, "
        f"{loaded['dataset_members']:,} dataset members, {loaded['checkpoints']} checkpoints, "
        f"median of {args.ancestry_runs} queries. CPU: this process plus the server backend "
        "(what the work costs on an idle machine); verdicts: wall / CPU.\n"
    )
    header = ("figure", "wall-clock", "CPU time", "target", "wall / CPU")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in (1, 2, 3)]
        print("| " + " | ".join([*cells, r[4].ljust(widths[4])]) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="rows per ingestion measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per path (median)")
    parser.add_argument("--lineage-samples", type=int, default=1_000_000)
    parser.add_argument("--ancestry-runs", type=int, default=7, help="timed ancestry queries")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} cores, {cpu_model()}; load average {os.getloadavg()[0]:.1f}")
    with fresh_database() as (url, local):
        with make_engine(url).connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar_one()
        print(f"server: PostgreSQL {version}" + ("" if local else " (remote: no CPU figures)"))
        times = bench_ingestion(url, local, args.n, args.repeat)
        lin = bench_lineage(url, local, args.lineage_samples, args.ancestry_runs)
    report(args, local, times, lin)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (other work shares these cores)")


if __name__ == "__main__":
    main()
