"""``flywheel export`` over rows in a real PostgreSQL: datasets, a round's samples and a run's
evaluations round-trip to Parquet (read back with pyarrow and with ``datasets``) and to a
``datasets`` folder, the card says what the database says, a dataset file that disagrees with
its members is refused, the CLI works as a subprocess, and memory stays bounded on 200k
samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml
from export_support import TRAIN_SAMPLES, add_bulk_samples, seed_run

from dataflywheel.db.models import Dataset
from dataflywheel.export import ExportError
from dataflywheel.export.exporter import (
    DATA_FILE,
    DatasetTarget,
    EvaluationsTarget,
    SamplesTarget,
    export_folder,
    snapshot,
)
from dataflywheel.export.schema import EVALUATIONS, PREFERENCE_DATASET, SAMPLES, SFT_DATASET
from dataflywheel.prompts import canonical_jsonl
from dataflywheel.store import LocalStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


@pytest.fixture
def seeded(engine: sa.Engine, store: LocalStore) -> dict[str, Any]:
    return seed_run(engine, store)


def _card(folder: Path) -> tuple[dict[str, Any], str]:
    text = (folder / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def _scores(row: dict[str, Any]) -> list[tuple]:
    return [(s["verifier"], s["verifier_version"], s["value"], s["passed"], s["status"])
            for s in row["scores"]]  # fmt: skip


def test_sft_dataset_round_trips_with_its_lineage(
    engine: sa.Engine, store: LocalStore, seeded: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "train"
    result = export_folder(engine, DatasetTarget(seeded["d_train"]), out, store=store)
    assert result.rows == 3 and result.data_files == (out / DATA_FILE,)
    table = pq.read_table(out / DATA_FILE)
    assert table.schema.remove_metadata() == SFT_DATASET.remove_metadata()
    meta = table.schema.metadata
    assert meta[b"dataflywheel.dataset_id"] == str(seeded["d_train"]).encode()
    assert meta[b"dataflywheel.spec_hash"] == seeded["spec_hash"].encode()
    rows = table.to_pylist()
    assert [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows] == seeded["rows"][
        "train"
    ]
    kept = seeded["kept"]
    assert [r["sample_id"] for r in rows] == [seeded["train_samples"][pk] for pk in kept]
    assert [r["position"] for r in rows] == [0, 1, 2]
    assert {r["checkpoint_digest"] for r in rows} == {"a" * 64}
    assert {r["round_index"] for r in rows} == {1}
    assert rows[0]["prompt_id"] == seeded["prompts"][0] and rows[0]["prompt_set"] == "addition"
    assert json.loads(rows[0]["reference"]) == {"answer": "4"}
    assert json.loads(rows[0]["sampling_params"])["temperature"] == 1.0
    assert rows[0]["completion_tokens"] == 1 and rows[0]["finish_reason"] == "stop"
    # p0#0 was scored by exact_answer v1 and v2 (a rescore) and format v2, in verifier order.
    assert _scores(rows[0]) == [
        ("exact_answer", "v1", 1.0, True, "scored"),
        ("exact_answer", "v2", 1.0, True, "scored"),
        ("format", "v2", 1.0, True, "scored"),
    ]
    assert json.loads(rows[0]["scores"][0]["details"]) == {"answer": "4"}

    front, body = _card(out)
    assert front["license"] == "other" and front["tags"] == ["dataflywheel"]
    assert front["size_categories"] == ["n<1K"]
    assert front["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}]}
    ]
    assert f"run {seeded['run']} (rejection-sft), round 1: dataset train" in front["pretty_name"]
    for fact in (
        seeded["spec_hash"],
        "d" * 64,  # the round's manifest digest
        "a" * 64,  # the generating checkpoint
        "b" * 64,  # the checkpoint trained on it
        "c0ffee",  # the manifest's git commit
        "| rows in this export | 3 |",
        "| rows in the dataset | 3 |",
        "| decontaminate | 4 | 3 | 0.75 | contaminated: 1 |",
        "removed 1 rows",
        "| exact_answer | `v1` | 3 | 3 | 0 |",
        "| exact_answer | `v2` | 1 | 1 | 0 |",
        "exact_answer `v1`, format `v2`",  # versions in the manifest
        "max_per_prompt: 2",  # the recipe configuration
        "num_prompts: 300",  # the run spec
        "| `scores` | `list<item: struct<verifier: string not null",
    ):
        assert fact in body, fact
    assert "| #" + str(seeded["c1"]) + " | `" + "b" * 64 + "` | 1 | promoted | 0.7 |" in body
    datasets = pytest.importorskip("datasets")
    by_card = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert by_card.num_rows == 3 and by_card[0]["completion"] == "4"


def test_preference_and_labelled_datasets(
    engine: sa.Engine, store: LocalStore, seeded: dict[str, Any], tmp_path: Path
) -> None:
    export_folder(engine, DatasetTarget(seeded["d_pairs"]), tmp_path / "pairs", store=store)
    table = pq.read_table(tmp_path / "pairs" / DATA_FILE)
    assert table.schema.remove_metadata() == PREFERENCE_DATASET.remove_metadata()
    (pair,) = table.to_pylist()
    samples = seeded["train_samples"]
    assert (pair["prompt"], pair["chosen"], pair["rejected"]) == ("3 + 3 =", "6", "7")
    assert (pair["sample_id"], pair["rejected_sample_id"]) == (samples[1, 0], samples[1, 1])
    assert _scores(pair)[0] == ("exact_answer", "v1", 1.0, True, "scored")
    assert pair["rejected_scores"][0]["passed"] is False
    assert pair["rejected_scores"][0]["reason"] == "mismatch"

    export_folder(engine, DatasetTarget(seeded["d_warmup"]), tmp_path / "warmup", store=store)
    rows = pq.read_table(tmp_path / "warmup" / DATA_FILE).to_pylist()
    assert [r["completion"] for r in rows] == [r["label"] for r in rows] == ["4", "6", "8"]
    assert all(r["sample_id"] is None and r["scores"] == [] for r in rows)
    _, body = _card(tmp_path / "warmup")
    assert "Recipe `labelled`" in body and "no filters" in body
    assert "| round | 0 (succeeded, seed 10) |" in body


def test_round_samples_as_a_datasets_folder(
    engine: sa.Engine, store: LocalStore, seeded: dict[str, Any], tmp_path: Path
) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "samples"
    result = export_folder(
        engine, SamplesTarget(seeded["run"], 1), out, store=None, fmt="hf", row_group_rows=4
    )
    assert result.rows == 9  # 6 train, 2 eval, 1 baseline
    assert not list(out.parent.glob(".samples.*"))  # the work folder was renamed into place
    parquet = pq.ParquetFile(out / DATA_FILE)
    assert parquet.metadata.num_row_groups == 3  # 4 + 4 + 1
    assert parquet.schema_arrow.remove_metadata() == SAMPLES.remove_metadata()
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    table = parquet.read()
    assert table.column("purpose").to_pylist() == ["baseline"] + ["eval"] * 2 + ["train"] * 6
    by_id = {r["sample_id"]: r for r in table.to_pylist()}
    assert len(by_id) == 9
    sid = seeded["train_samples"]
    unscorable = by_id[sid[2, 1]]
    assert unscorable["completion"] == "?" and unscorable["in_dataset"] is False
    assert _scores(unscorable)[0] == ("exact_answer", "v1", None, None, "unscorable")
    assert by_id[sid[0, 0]]["in_dataset"] and by_id[sid[1, 1]]["in_dataset"]  # kept; rejected
    assert by_id[sid[0, 0]]["created_at"].tzinfo is not None
    assert sum(len(r["scores"]) for r in by_id.values()) == seeded["scores"]
    for (p, k), text in TRAIN_SAMPLES.items():
        assert by_id[sid[p, k]]["completion"] == text
        assert by_id[sid[p, k]]["prompt"] == f"{p + 2} + {p + 2} ="

    on_disk = datasets.load_from_disk(str(out))
    assert on_disk.num_rows == 9 and on_disk[0]["purpose"] == "baseline"
    assert on_disk.features["scores"].feature["verifier"].dtype == "string"
    assert [r["sample_id"] for r in on_disk] == table.column("sample_id").to_pylist()
    loaded = datasets.load_dataset(
        "parquet", data_files=str(out / DATA_FILE), cache_dir=str(tmp_path / "hf-cache")
    )["train"]
    assert loaded.num_rows == 9
    assert loaded[3]["scores"] == table.slice(3, 1).to_pylist()[0]["scores"]
    assert not list(tmp_path.glob(".*.arrow"))

    front, body = _card(out)
    assert front["size_categories"] == ["n<1K"]
    assert "load_from_disk" in body and "| rows in this export | 9 |" in body
    assert "### Dataset #" in body and "`pairs`" in body and "`train`" in body
    assert "| #" + str(seeded["c0"]) + " | `" + "a" * 64 + "` | 0 | 0 | promoted |" in body
    assert "| exact_answer | `v1` | 9 | 6 | 1 |" in body

    only_train = export_folder(
        engine,
        SamplesTarget(seeded["run"], 1, ("train",)),
        tmp_path / "train-only",
        store=None,
    )
    assert only_train.rows == 6
    _, body = _card(tmp_path / "train-only")
    assert "| purposes | train |" in body and "samples (train)" in body


def test_run_evaluations(engine: sa.Engine, seeded: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "evals"
    assert export_folder(engine, EvaluationsTarget(seeded["run"]), out, store=None).rows == 3
    table = pq.read_table(out / DATA_FILE)
    assert table.schema.remove_metadata() == EVALUATIONS.remove_metadata()
    rows = table.to_pylist()
    base = [r for r in rows if r["checkpoint_status"] == "base"]
    assert len(base) == 1 and base[0]["trained_in_round"] is None
    assert (base[0]["n"], base[0]["correct"]) == (1, 0)
    assert base[0]["sample_ids"] == [seeded["baseline_sample"]]
    c1 = [r for r in rows if r["checkpoint_id"] == seeded["c1"]]
    assert [r["prompt_id"] for r in c1] == sorted(seeded["prompts"][:2])
    assert all(r["passed"] and r["trained_in_round"] == 1 and r["round_index"] == 1 for r in c1)
    assert json.loads(c1[0]["metrics"]) == {"accuracy": 1.0, "k": 1}
    _, body = _card(out)
    assert f"| #{seeded['e_c1']} | heldout | #{seeded['c1']} | `{'b' * 64}` | 1 |" in body


def test_dataset_file_that_disagrees_with_its_members_is_refused(
    engine: sa.Engine, store: LocalStore, seeded: dict[str, Any], tmp_path: Path
) -> None:
    rows = seeded["rows"]["train"]
    swapped = store.put_bytes(canonical_jsonl([rows[2], rows[0], rows[1]]))
    short = store.put_bytes(canonical_jsonl(rows[:2]))
    for ref, message in (
        (swapped, "the file and the members disagree"),
        (short, "has 2 rows, the database records 3 members"),
    ):
        with engine.begin() as conn:
            conn.execute(
                sa.update(Dataset)
                .where(Dataset.id == seeded["d_train"])
                .values(object_key=ref.key, digest=ref.digest)
            )
        out = tmp_path / "bad"
        with pytest.raises(ExportError, match=message):
            export_folder(engine, DatasetTarget(seeded["d_train"]), out, store=store)
        assert not out.exists() and not list(tmp_path.glob(".bad.*"))


def test_unknown_ids_and_a_full_folder_are_refused(
    engine: sa.Engine, store: LocalStore, seeded: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(LookupError, match="run 999 does not exist"):
        export_folder(engine, EvaluationsTarget(999), tmp_path / "a", store=None)
    with pytest.raises(LookupError, match="has no round 7"):
        export_folder(engine, SamplesTarget(seeded["run"], 7), tmp_path / "b", store=None)
    with pytest.raises(LookupError, match="dataset 999 does not exist"):
        export_folder(engine, DatasetTarget(999), tmp_path / "c", store=store)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_folder(engine, EvaluationsTarget(seeded["run"]), full, store=None)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]


def _cli_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(
        FLYWHEEL_DATABASE_URL=db_url,
        FLYWHEEL_STORE_URI=str(tmp_path / "objects"),
        FLYWHEEL_DATA_DIR=str(tmp_path / "data"),
        COLUMNS="200",
    )
    return env


def test_cli_exports_a_dataset_as_users_run_it(
    db_url: str, seeded: dict[str, Any], tmp_path: Path
) -> None:
    flywheel = str(Path(sys.executable).with_name("flywheel"))
    env = _cli_env(db_url, tmp_path)
    done = subprocess.run(
        [flywheel, "export", "dataset", str(seeded["d_train"]), "--format", "parquet"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "data" / "exports" / f"dataset-{seeded['d_train']}"
    assert f"wrote 3 rows to {folder}" in done.stdout
    assert pq.read_table(folder / DATA_FILE).num_rows == 3
    assert (folder / "README.md").read_text().startswith("---\nlicense: other\n")

    missing = subprocess.run(
        [flywheel, "export", "samples", str(seeded["run"]), "--round", "9"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error: run") and "no round 9" in missing.stderr
    assert "Traceback" not in missing.stderr


MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from dataflywheel.db.session import make_engine
    from dataflywheel.export.exporter import SamplesTarget, export_folder

    url, run_id, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    engine = make_engine(url)

    def export(purpose):
        target = SamplesTarget(run_id, 1, (purpose,))
        result = export_folder(engine, target, out / purpose, store=None, row_group_rows=5_000)
        return result.rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    export("eval")  # imports, connection, caches: warm before the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    small, after_small = export("baseline")
    large, after_large = export("train")
    print(json.dumps({"base": base, "small": [small, after_small], "large": [large, after_large]}))
    """
)


def test_memory_stays_bounded_on_200k_samples(
    engine: sa.Engine, db_url: str, seeded: dict[str, Any], tmp_path: Path
) -> None:
    text_bytes = 700
    bulk = dict(per_prompt=100, text_bytes=text_bytes)
    small = add_bulk_samples(engine, seeded["round1"], seeded["c0"], prompts=200,
                             purpose="baseline", **bulk)  # fmt: skip
    large = add_bulk_samples(engine, seeded["round1"], seeded["c0"], prompts=2_000, **bulk)
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, db_url, str(seeded["run"]), str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    figures = json.loads(probe.stdout.strip().splitlines()[-1])
    assert figures["small"][0] == small + 1 and figures["large"][0] == large + len(TRAIN_SAMPLES)
    completions = large * text_bytes  # the large export's completions alone: 140 MB
    first = figures["small"][1] - figures["base"]
    more = figures["large"][1] - figures["small"][1]
    # Peak memory is a few batches and one row group, whatever the number of rows: ten
    # times the rows raise it by almost nothing, and it stays far below the completions' bytes
    # (holding the rows as Python objects took about ten times those).
    assert more < completions / 10, (first, more, completions)
    assert first + more < completions / 2, (first, more, completions)
    parquet = pq.ParquetFile(tmp_path / "train" / DATA_FILE)
    assert parquet.metadata.num_rows == large + len(TRAIN_SAMPLES)
    assert parquet.metadata.num_row_groups == 41  # 40 full groups of 5,000, then 6 rows
    last = parquet.read_row_group(40, columns=["completion", "scores"])
    assert len(last.column("completion")[0].as_py()) == text_bytes
    assert last.column("scores").type == SAMPLES.field("scores").type
    assert last.column("scores")[0].as_py()[0]["verifier"] == "exact_answer"


def test_a_score_that_json_cannot_carry_is_refused(
    engine: sa.Engine, seeded: dict[str, Any], tmp_path: Path
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE scores SET value = 'NaN' WHERE sample_id = :id AND verifier = 'format'"
            ),
            {"id": seeded["train_samples"][0, 0]},
        )
    with pytest.raises(ExportError, match="must be a finite number"):
        export_folder(engine, SamplesTarget(seeded["run"], 1), tmp_path / "nan", store=None)
    assert not (tmp_path / "nan").exists()


def test_rows_and_card_are_read_in_one_read_only_snapshot(engine: sa.Engine) -> None:
    with snapshot(engine) as conn:
        assert conn.execute(sa.text("SHOW transaction_isolation")).scalar() == "repeatable read"
        assert conn.execute(sa.text("SHOW transaction_read_only")).scalar() == "on"
