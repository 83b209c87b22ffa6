"""Exports, end to end: what to export (a target), read in one database snapshot, written as
a folder (Parquet file, dataset card, optionally a ``datasets`` folder) or streamed as the
bytes of one Parquet file.

Runs in: the CLI (``flywheel export``), the API's export routes and ``bench/export.py``. The
rows and the card's facts are read in one ``REPEATABLE READ``, read-only transaction, so the
card describes exactly the rows beside it even while a run is writing. A dataset's text
columns are its file in the object store (the bytes the trainer read, verified against the
digest); the file's rows are checked against the members recorded in the database, position
by position, and a disagreement is an :class:`ExportError`, never a silently misaligned
lineage. A folder is built beside its destination and renamed into place at the end, so a
failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
from sqlalchemy.engine import Connection, Engine

from dataflywheel import __version__
from dataflywheel.db import exports
from dataflywheel.export import ExportError
from dataflywheel.export.card import CardFacts, render_card
from dataflywheel.export.parquet import ROW_GROUP_ROWS, parquet_chunks, write_parquet
from dataflywheel.export.schema import (
    EVALUATIONS,
    SAMPLES,
    dataset_schema,
    describe,
    record_batch,
    text_columns,
    with_lineage,
)
from dataflywheel.store import ObjectStore

BATCH_ROWS = 2_000
DATA_FILE = "data/train-00000-of-00001.parquet"
FORMATS = ("parquet", "hf")
PURPOSES = exports.PURPOSES


@dataclass(frozen=True)
class DatasetTarget:
    """A dataset's rows as trained (``datasets.id``)."""

    dataset_id: int


@dataclass(frozen=True)
class SamplesTarget:
    """The samples of round ``round_index`` of a run, of the given purposes."""

    run_id: int
    round_index: int
    purposes: tuple[str, ...] = PURPOSES


@dataclass(frozen=True)
class EvaluationsTarget:
    """The per-prompt results of every evaluation of a run's checkpoints."""

    run_id: int


Target = DatasetTarget | SamplesTarget | EvaluationsTarget


@dataclass(frozen=True)
class Prepared:
    """A resolved export: its schema, its batches (read lazily) and its card's facts."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    facts: CardFacts


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    data_files: tuple[Path, ...]
    card: Path
    rows: int
    format: str


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only connection whose every statement sees the same snapshot."""
    with engine.connect() as conn:
        conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


@contextmanager
def prepare(
    conn: Connection, target: Target, *, store: ObjectStore | None, batch_rows: int = BATCH_ROWS
) -> Iterator[Prepared]:
    """The export of ``target``, valid while the block runs (a dataset's file is fetched
    into a temporary folder for its duration)."""
    if isinstance(target, DatasetTarget):
        with _prepare_dataset(conn, target, store, batch_rows) as prepared:
            yield prepared
    elif isinstance(target, SamplesTarget):
        yield _prepare_samples(conn, target, batch_rows)
    else:
        yield _prepare_evaluations(conn, target, batch_rows)


def _lineage(kind: str, run: dict[str, Any], **more: Any) -> dict[str, str]:
    found = {"kind": kind, "run_id": run["id"], "spec_hash": run["spec_hash"], **more}
    return {k: str(v) for k, v in found.items() if v is not None}


def _title(run: dict[str, Any], round_index: int | None, what: str) -> str:
    where = f", round {round_index}" if round_index is not None else ""
    return f"dataflywheel run {run['id']} ({run['name']}){where}: {what}"


@contextmanager
def _prepare_dataset(
    conn: Connection, target: DatasetTarget, store: ObjectStore | None, batch_rows: int
) -> Iterator[Prepared]:
    if store is None:
        raise ExportError("a dataset export reads the dataset file: it needs the object store")
    dataset = exports.dataset_facts(conn, target.dataset_id)
    run = exports.run_facts(conn, dataset["run_id"])
    rnd = exports.round_facts_by_id(conn, dataset["round_id"]) if dataset["round_id"] else None
    index = rnd["index"] if rnd else None
    schema = with_lineage(
        dataset_schema(dataset["kind"]),
        _lineage("dataset", run, round_index=index, dataset_id=dataset["id"],
                 dataset_digest=dataset["digest"]),
    )  # fmt: skip
    facts = CardFacts(
        kind="dataset",
        title=_title(run, index, f"dataset {dataset['name']} ({dataset['kind']})"),
        data_files=(DATA_FILE,),
        rows=0,
        columns=describe(schema),
        run=run,
        version=__version__,
        round=rnd,
        dataset=dataset,
        verifiers=exports.scope_verifiers(conn, dataset_id=dataset["id"]),
        checkpoints=exports.scope_checkpoints(conn, dataset_id=dataset["id"]),
        trained_into=exports.trained_into(conn, dataset["id"]),
    )
    with tempfile.TemporaryDirectory(prefix="flywheel-export-") as tmp:
        path = store.get_file(dataset["object_key"], Path(tmp) / "dataset.jsonl")
        _check_counts(conn, dataset, path)
        with path.open("rb") as handle:
            batches = _dataset_batches(conn, dataset, handle, schema, batch_rows)
            yield Prepared(schema, batches, facts)


def _check_counts(conn: Connection, dataset: dict[str, Any], path: Path) -> None:
    """Refuse a dataset whose file, members and ``row_count`` disagree on its length before
    any byte is written (a stream cannot take back what it has sent)."""
    with path.open("rb") as handle:
        lines = sum(1 for _ in handle)
    members = exports.member_count(conn, dataset["id"])
    if not lines == members == dataset["row_count"]:
        raise ExportError(
            f"dataset {dataset['id']}: its file {dataset['object_key']} has {lines} rows, the "
            f"database records {members} members and row_count {dataset['row_count']}; "
            f"`flywheel check {dataset['run_id']}` finds the damage"
        )


def _dataset_batches(
    conn: Connection,
    dataset: dict[str, Any],
    handle: IO[bytes],
    schema: pa.Schema,
    batch_rows: int,
) -> Iterator[pa.RecordBatch]:
    """Members from the database zipped with the dataset file's lines (as many: see
    :func:`_check_counts`), checked row by row."""
    name, texts = f"dataset {dataset['id']}", text_columns(dataset["kind"])
    line = 0
    preference = dataset["kind"] == "preference"
    for cols in exports.dataset_rows(
        conn, dataset["id"], preference=preference, batch_rows=batch_rows
    ):
        count = len(cols["position"])
        rows = [json.loads(raw) for raw in islice(handle, count)]
        for i, (position, row, stored) in enumerate(
            zip(cols["position"], rows, cols["prompt_text"], strict=True)
        ):
            if position != line + i:
                raise ExportError(
                    f"{name}: member positions skip from {line + i - 1} to {position}"
                )
            if row.get("prompt") != stored:
                raise ExportError(
                    f"{name}: row {position} of its file is not the prompt its member records "
                    f"(prompt {cols['prompt_id'][i]}): the file and the members disagree"
                )
        cols["prompt"] = [row.get("prompt") for row in rows]
        for column in texts:
            cols[column] = [row.get(column) for row in rows]
        line += count
        yield record_batch(schema, cols)


def _prepare_samples(conn: Connection, target: SamplesTarget, batch_rows: int) -> Prepared:
    unknown = sorted(set(target.purposes) - set(PURPOSES))
    if unknown or not target.purposes:
        raise ExportError(f"purposes must be among {', '.join(PURPOSES)} (got {unknown or 'none'})")
    purposes = tuple(p for p in PURPOSES if p in target.purposes)
    run = exports.run_facts(conn, target.run_id)
    rnd = exports.round_facts(conn, target.run_id, target.round_index)
    schema = with_lineage(
        SAMPLES, _lineage("samples", run, round_index=rnd["index"], purposes=",".join(purposes))
    )
    what = "samples" if purposes == PURPOSES else f"samples ({', '.join(purposes)})"
    facts = CardFacts(
        kind="samples",
        title=_title(run, rnd["index"], what),
        data_files=(DATA_FILE,),
        rows=0,
        columns=describe(schema),
        run=run,
        version=__version__,
        round=rnd,
        purposes=purposes,
        selections=exports.round_datasets(conn, rnd["id"]),
        verifiers=exports.scope_verifiers(conn, round_id=rnd["id"], purposes=purposes),
        checkpoints=exports.scope_checkpoints(conn, round_id=rnd["id"], purposes=purposes),
    )
    rows = exports.round_samples(conn, rnd["id"], purposes, batch_rows=batch_rows)
    return Prepared(schema, (record_batch(schema, cols) for cols in rows), facts)


def _prepare_evaluations(conn: Connection, target: EvaluationsTarget, batch_rows: int) -> Prepared:
    run = exports.run_facts(conn, target.run_id)
    schema = with_lineage(EVALUATIONS, _lineage("evaluations", run))
    facts = CardFacts(
        kind="evaluations",
        title=_title(run, None, "evaluations"),
        data_files=(DATA_FILE,),
        rows=0,
        columns=describe(schema),
        run=run,
        version=__version__,
        verifiers=exports.scope_verifiers(conn, run_id=run["id"]),
        evaluations=exports.evaluation_summaries(conn, run["id"]),
    )
    rows = exports.run_evaluations(conn, run["id"], batch_rows=batch_rows)
    return Prepared(schema, (record_batch(schema, cols) for cols in rows), facts)


# --------------------------------------------------------------------------- outputs


def _empty_or_absent(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ExportError(f"{folder} exists and is not empty: choose another --out or remove it")


def export_folder(
    engine: Engine,
    target: Target,
    out: Path,
    *,
    store: ObjectStore | None,
    fmt: str = "parquet",
    batch_rows: int = BATCH_ROWS,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> ExportResult:
    """Write ``target`` into the folder ``out`` (absent or empty): ``data/*.parquet`` and the
    card ``README.md``; with ``fmt="hf"`` also a ``datasets.save_to_disk`` folder."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "hf":
        from dataflywheel.export.hf import require_datasets

        require_datasets()  # refuse before reading anything
    out = Path(out).absolute()
    _empty_or_absent(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        work.chmod(0o755)
        data = work / DATA_FILE
        data.parent.mkdir(parents=True)
        with (
            snapshot(engine) as conn,
            prepare(conn, target, store=store, batch_rows=batch_rows) as prep,
        ):
            rows = write_parquet(prep.batches, data, prep.schema, row_group_rows=row_group_rows)
        if fmt == "hf":
            from dataflywheel.export.hf import save_dataset_folder

            save_dataset_folder([data], work)
        card = work / "README.md"
        card.write_text(render_card(replace(prep.facts, rows=rows, hf_folder=fmt == "hf")))
        _empty_or_absent(out)
        if out.exists():
            out.rmdir()
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ExportResult(
        folder=out,
        data_files=(out / DATA_FILE,),
        card=out / "README.md",
        rows=rows,
        format=fmt,
    )


def stream_parquet(
    engine: Engine,
    target: Target,
    *,
    store: ObjectStore | None,
    batch_rows: int = BATCH_ROWS,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> Iterator[bytes]:
    """The Parquet file of ``target`` as chunks, a row group at a time. The first chunk
    (the file's magic bytes) comes once the target is resolved and its dataset file fetched,
    so a caller that takes it first sees a missing target or store object before it answers."""
    with (
        snapshot(engine) as conn,
        prepare(conn, target, store=store, batch_rows=batch_rows) as prep,
    ):
        yield from parquet_chunks(prep.batches, prep.schema, row_group_rows=row_group_rows)
