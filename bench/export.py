"""Benchmark: ``flywheel export`` of a round with many samples (10M by default).

Runs in: a developer shell (not a test). It fills one round of a fresh database with
``--rows`` samples (two verdicts each: exact_answer and format), generated inside PostgreSQL
so the fill costs no client memory, then exports the round's samples as ``flywheel export
samples`` does and prints rows/s (wall clock, and CPU of this process plus the server), the
export's peak RSS above the process's level before it, and the Parquet file's size.

The database is fresh: a new database on the server of ``FLYWHEEL_DATABASE_URL`` when set
(created and dropped here), else an embedded PostgreSQL in a temporary directory.

    .venv/bin/python bench/export.py [--rows 10000000] [--text-bytes 300] [--format parquet]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dataflywheel.db import embedded, migrate
from dataflywheel.db.session import make_engine, normalize_url
from dataflywheel.export.exporter import BATCH_ROWS, SamplesTarget, export_folder
from dataflywheel.export.parquet import ROW_GROUP_ROWS

PROMPTS_PER_STATEMENT = 50_000


class AnonPeak:
    """Samples this process's anonymous resident memory (``RssAnon``: heap, Arrow buffers)
    every 20 ms. ``ru_maxrss`` also counts file pages mapped into the process, which grow
    with the file while ``datasets`` reads its memory-mapped Arrow cache but are page cache
    the kernel can take back."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> AnonPeak:
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


@contextmanager
def fresh_database() -> Iterator[tuple[str, psutil.Process | None]]:
    """URL of a new, migrated database, and the local server's postmaster (None if remote)."""
    configured = os.environ.get("FLYWHEEL_DATABASE_URL")
    if configured:
        url = make_url(normalize_url(configured))
        name = f"flywheel_bench_{uuid.uuid4().hex[:8]}"
        admin = url.set(drivername="postgresql", database="postgres")
        admin_url = admin.render_as_string(hide_password=False)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _migrated(url.set(database=name).render_as_string(hide_password=False)), None
        finally:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as tmp:
        Path(tmp).chmod(0o755)  # as root, the embedded server runs as its own user
        pgdata = Path(tmp) / "postgres"
        server = embedded.start(pgdata)
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        try:
            yield _migrated(server.url), psutil.Process(pid)
        finally:
            embedded.stop(pgdata)


def _migrated(url: str) -> str:
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def server_cpu(postmaster: psutil.Process | None) -> float:
    """CPU seconds of the server's processes (backends come and go: the export's own
    backend is alive while it runs, so read it before the export's connection closes)."""
    if postmaster is None:
        return 0.0
    total = 0.0
    for proc in [postmaster, *postmaster.children()]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def fill(engine: sa.Engine, rows: int, per_prompt: int, text_bytes: int) -> tuple[int, int]:
    """One run, one round, ``rows`` train samples (rounded up to whole prompts) with two
    scores each; returns (run id, seconds)."""
    started = time.perf_counter()
    prompts = -(-rows // per_prompt)
    with engine.begin() as conn:
        run = conn.execute(
            sa.text(
                "INSERT INTO runs (name, spec, spec_hash, status) "
                "VALUES ('bench-export', '{}', repeat('0', 64), 'succeeded') RETURNING id"
            )
        ).scalar_one()
        round_id = conn.execute(
            sa.text("INSERT INTO rounds (run_id, index, seed) VALUES (:r, 1, 1) RETURNING id"),
            {"r": run},
        ).scalar_one()
        checkpoint = conn.execute(
            sa.text(
                "INSERT INTO checkpoints (run_id, status, digest) "
                "VALUES (:r, 'base', repeat('a', 64)) RETURNING id"
            ),
            {"r": run},
        ).scalar_one()
    for first in range(0, prompts, PROMPTS_PER_STATEMENT):
        last = min(first + PROMPTS_PER_STATEMENT, prompts) - 1
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    """
                    WITH new AS (
                        INSERT INTO prompts (content_hash, text_hash, prompt_set, split, text,
                                             reference, difficulty)
                        SELECT md5(i::text) || md5('p' || i), md5(i::text) || md5('t' || i),
                               'bench', 'train', 'What is ' || i || ' + ' || i || '? Answer:',
                               jsonb_build_object('answer', (2 * i)::text), 1 + i % 5
                        FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) i
                        RETURNING id
                    )
                    INSERT INTO samples (round_id, prompt_id, checkpoint_id, purpose,
                                         sample_index, seed, sampling_params, text,
                                         prompt_tokens, completion_tokens, finish_reason)
                    SELECT :round, new.id, :checkpoint, 'train', k, new.id * 64 + k,
                           '{"temperature": 0.8, "top_p": 0.95, "max_tokens": 256}',
                           left(repeat(md5((new.id * 64 + k)::text) || ' ', CAST(:reps AS int)),
                                CAST(:text_bytes AS int)),
                           12, CAST(:text_bytes AS int) / 4, 'stop'
                    FROM new, generate_series(0, CAST(:per_prompt AS int) - 1) k
                    """
                ),
                {
                    "round": round_id,
                    "checkpoint": checkpoint,
                    "per_prompt": per_prompt,
                    "reps": text_bytes // 33 + 1,
                    "text_bytes": text_bytes,
                    "first": first,
                    "last": last,
                },
            )
        print(f"  filled {(last + 1) * per_prompt:,} samples", flush=True)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """
                INSERT INTO scores (sample_id, verifier, verifier_version, value, passed, reason)
                SELECT s.id, v.name, 'v1', (s.id % 3 > 0)::int, s.id % 3 > 0,
                       CASE WHEN s.id % 3 = 0 THEN 'mismatch' END
                FROM samples s, (VALUES ('exact_answer'), ('format')) v(name)
                WHERE s.round_id = :round
                """
            ),
            {"round": round_id},
        )
        conn.execute(sa.text("ANALYZE"))
    return run, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="samples in the round")
    parser.add_argument("--per-prompt", type=int, default=8, help="samples per prompt")
    parser.add_argument("--text-bytes", type=int, default=300, help="characters per completion")
    parser.add_argument("--format", choices=("parquet", "hf"), default="parquet")
    parser.add_argument("--batch-rows", type=int, default=BATCH_ROWS)
    parser.add_argument("--row-group-rows", type=int, default=ROW_GROUP_ROWS)
    parser.add_argument("--out", type=Path, help="keep the export in this folder (absent/empty)")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    with fresh_database() as (url, postmaster), tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(url)
        print(f"filling {args.rows:,} samples ({args.text_bytes} characters each) ...")
        run, fill_s = fill(engine, args.rows, args.per_prompt, args.text_bytes)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM samples")).scalar_one()
            print(f"filled {rows:,} samples in {fill_s:.0f} s")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        anon_before = AnonPeak.now()
        cpu, server = time.process_time(), server_cpu(postmaster)
        started = time.perf_counter()
        with AnonPeak() as anon:
            result = export_folder(
                engine,
                SamplesTarget(run, 1),
                args.out or Path(tmp) / "export",
                store=None,
                fmt=args.format,
                batch_rows=args.batch_rows,
                row_group_rows=args.row_group_rows,
            )
        wall = time.perf_counter() - started
        client = time.process_time() - cpu
        server = server_cpu(postmaster) - server
        cpu = client + server
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        size = sum(p.stat().st_size for p in result.data_files)
        print(f"exported {result.rows:,} rows ({args.format}) in {wall:.1f} s")
        print(f"  rows/s, wall clock:        {result.rows / wall:,.0f}")
        if postmaster is not None:
            print(
                f"  rows/s, CPU (us + server): {result.rows / cpu:,.0f}  ({client:.1f} CPU s "
                f"here, {server:.1f} in PostgreSQL)"
            )
        print(f"  peak RSS: {peak / 2**20:,.0f} MiB ({(peak - rss_before) / 2**20:,.0f} MiB above "
              f"the {rss_before / 2**20:,.0f} MiB before the export)")  # fmt: skip
        print(f"  peak anonymous RSS: {anon.peak / 2**20:,.0f} MiB "
              f"({(anon.peak - anon_before) / 2**20:,.0f} MiB above the start)")  # fmt: skip
        print(f"  Parquet: {size / 2**20:,.1f} MiB, {size / max(result.rows, 1):.1f} bytes/row")
        engine.dispose()


if __name__ == "__main__":
    main()
