"""The pure parts of exports: batches from database columns, the row-group writer (to a file
and as streamed chunks) and the dataset card."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from dataflywheel.export import ExportError
from dataflywheel.export.card import CardFacts, render_card, size_category
from dataflywheel.export.parquet import parquet_chunks, write_parquet
from dataflywheel.export.schema import (
    EVALUATIONS,
    PREFERENCE_DATASET,
    SAMPLES,
    SCORES,
    SFT_DATASET,
    describe,
    record_batch,
    scores_array,
)


def _score(verifier: str, value: float | None, **more: object) -> dict[str, object]:
    return {"verifier": verifier, "verifier_version": "v1", "value": value,
            "passed": None if value is None else value > 0.5, "status": "scored",
            "reason": None, "details": "{}", **more}  # fmt: skip


def test_scores_from_json_text_keep_order_types_and_empties() -> None:
    rows = [
        json.dumps([_score("a", 1.0), _score("b", 0.1)]),
        None,
        "[]",
        json.dumps([_score("c", None)]),
    ]
    array = scores_array(rows)
    assert array.type == SCORES
    assert [len(r) for r in array.to_pylist()] == [2, 0, 0, 1]
    assert array.to_pylist()[0][1]["value"] == 0.1 and array.to_pylist()[3][0]["passed"] is None
    assert scores_array([]).to_pylist() == []


def test_a_score_json_cannot_carry_is_refused_loudly() -> None:
    with pytest.raises(ExportError, match="finite number"):
        scores_array([json.dumps([{**_score("a", None), "value": "NaN"}])])  # PostgreSQL's NaN


def test_record_batch_types_columns_and_fills_absent_ones() -> None:
    batch = record_batch(
        SAMPLES,
        {
            "sample_id": (1, 2),
            "round_index": (3, 3),
            "created_at": (0, 1_000_000),
            "sampling_params": ('{"temperature": 0.7}', "{}"),
            "scores": (json.dumps([_score("exact_answer", 1.0)]), None),
            "ignored": ("a", "b"),
        },
    )
    assert batch.schema == SAMPLES and batch.num_rows == 2
    row = batch.to_pylist()[1]
    assert row["created_at"].isoformat() == "1970-01-01T00:00:01+00:00"
    assert row["completion"] is None and row["scores"] == []
    assert batch.column("round_index").type == pa.int32()


def test_every_column_is_described_here_and_in_the_docs() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "export.md").read_text()
    for schema in (SAMPLES, SFT_DATASET, PREFERENCE_DATASET, EVALUATIONS):
        assert all(description for _, _, description in describe(schema))
        missing = [f.name for f in schema if f"`{f.name}`" not in docs]
        assert not missing, f"docs/export.md does not describe {missing}"


def _batches(n: int, size: int) -> list[pa.RecordBatch]:
    return [
        record_batch(EVALUATIONS, {"evaluation_id": list(range(i, min(i + size, n)))})
        for i in range(0, n, size)
    ]


def test_row_groups_are_whole_and_the_stream_is_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    assert write_parquet(_batches(23, 4), path, EVALUATIONS, row_group_rows=10) == 23
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [10, 10, 3]
    chunks = list(parquet_chunks(_batches(23, 4), EVALUATIONS, row_group_rows=10))
    assert chunks[0] == b"PAR1"  # before any batch is read
    assert len(chunks) == 4  # magic, two full groups, the last group and the footer
    streamed = pq.read_table(io.BytesIO(b"".join(chunks)))
    assert streamed.equals(pq.read_table(path))
    assert streamed.column("evaluation_id").to_pylist() == list(range(23))


def test_an_empty_export_is_a_valid_file_with_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    assert write_parquet([], path, SAMPLES) == 0
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.schema.remove_metadata() == SAMPLES.remove_metadata()


def _facts(**more: object) -> CardFacts:
    base = dict(
        kind="samples",
        title="dataflywheel run 3 (demo), round 1: samples",
        data_files=("data/train-00000-of-00001.parquet",),
        rows=12_345,
        columns=describe(SAMPLES),
        run={"id": 3, "name": "demo", "status": "succeeded", "spec_hash": "f" * 64,
             "spec": {"name": "demo", "seed": 1}},
        version="0.1.0",
        round={"index": 1, "status": "succeeded", "seed": 7, "manifest_digest": "e" * 64,
               "manifest": {"verifiers": {"exact_answer": "v9"}}},
        purposes=("train",),
        selections=[{"id": 5, "name": "train", "kind": "sft", "recipe": "majority_vote",
                     "recipe_config": {"min_agreement": 0.5},
                     "stats": {"seen": 10, "kept": 4, "yield": 0.4,
                               "filters": [{"filter": "length", "in": 5, "out": 4,
                                            "yield": 0.8, "removed": {"too_long": 1}}]}}],
        verifiers=[{"verifier": "exact_answer", "verifier_version": "v9", "verdicts": 10,
                    "passed": 4, "unscorable": 1}],
        checkpoints=[{"id": 2, "digest": "a" * 64, "status": "promoted", "peer": 0,
                      "trained_in_round": 0, "source_uri": None, "samples": 10}],
    )  # fmt: skip
    return CardFacts(**{**base, **more})  # type: ignore[arg-type]


def test_card_front_matter_is_what_the_hub_reads() -> None:
    text = render_card(_facts())
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front == {
        "license": "other",
        "pretty_name": "dataflywheel run 3 (demo), round 1: samples",
        "tags": ["dataflywheel"],
        "size_categories": ["10K<n<100K"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": "data/train-00000-of-00001.parquet"}],
            }
        ],
    }
    assert render_card(_facts()) == text  # the same facts, the same bytes


@pytest.mark.parametrize(
    ("rows", "category"),
    [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (10_000_000, "10M<n<100M")],
)
def test_size_categories(rows: int, category: str) -> None:
    assert size_category(rows) == category


def test_card_body_names_the_lineage() -> None:
    body = render_card(_facts())
    for fact in (
        "| run | #3 `demo` (succeeded) |",
        "| round | 1 (succeeded, seed 7) |",
        "| purposes | train |",
        "| rows in this export | 12345 |",
        "### Dataset #5 `train` (sft)",
        "Recipe `majority_vote`: 10 candidates seen, 4 kept (yield 0.4).",
        "| length | 5 | 4 | 0.8 | too_long: 1 |",
        "No decontamination filter ran in this selection.",
        "min_agreement: 0.5",
        "| exact_answer | `v9` | 10 | 4 | 1 |",
        "Versions in the round's manifest: exact_answer `v9`",
        "| #2 | `" + "a" * 64 + "` | 0 | 0 | promoted | – | 10 |",
        "## Run spec",
        "seed: 1",
        "## Columns",
    ):
        assert fact in body, fact
    assert "## Evaluations" not in body and "## Trained into" not in body


def test_card_cells_cannot_break_a_table() -> None:
    facts = _facts(run={"id": 1, "name": "a|b", "status": "x", "spec_hash": "h", "spec": {}})
    assert "`a\\|b`" in render_card(facts)


def test_hf_format_without_datasets_says_how_to_install_before_reading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dataflywheel.export.exporter import EvaluationsTarget, export_folder

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ExportError, match=r"pip install 'datasets>=3'"):
        export_folder(None, EvaluationsTarget(1), tmp_path / "out", store=None, fmt="hf")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
