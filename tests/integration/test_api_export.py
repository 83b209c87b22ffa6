"""The API's Parquet downloads over rows in a real PostgreSQL: the streamed file is the one
``flywheel export`` writes, unknown ids are 404 before any byte is sent, and a key is needed."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from api_support import make_app, new_key
from export_support import seed_run
from fastapi.testclient import TestClient

from dataflywheel.db.models import Dataset
from dataflywheel.export.exporter import DATA_FILE, SamplesTarget, export_folder
from dataflywheel.export.schema import SFT_DATASET
from dataflywheel.store import LocalStore


@pytest.fixture
def api(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    app = make_app(db_url, tmp_path)
    ids = seed_run(engine, LocalStore(tmp_path / "objects"))
    with TestClient(app, headers={"Authorization": f"Bearer {new_key(engine)}"}) as client:
        yield client, ids


def test_round_samples_stream_as_the_exported_file(
    api: tuple[TestClient, dict[str, Any]], engine: sa.Engine, tmp_path: Path
) -> None:
    client, ids = api
    response = client.get(f"/runs/{ids['run']}/rounds/1/samples.parquet")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    assert 'filename="run-' in response.headers["content-disposition"]
    streamed = pq.read_table(io.BytesIO(response.content))
    export_folder(engine, SamplesTarget(ids["run"], 1), tmp_path / "cli", store=None)
    written = pq.read_table(tmp_path / "cli" / DATA_FILE)
    assert streamed.equals(written, check_metadata=True)
    assert streamed.num_rows == 9

    evals = client.get(f"/runs/{ids['run']}/rounds/1/samples.parquet?purpose=eval")
    assert pq.read_table(io.BytesIO(evals.content)).column("purpose").to_pylist() == ["eval"] * 2
    bad = client.get(f"/runs/{ids['run']}/rounds/1/samples.parquet?purpose=nope")
    assert bad.status_code == 422


def test_dataset_and_evaluations_stream(api: tuple[TestClient, dict[str, Any]]) -> None:
    client, ids = api
    response = client.get(f"/datasets/{ids['d_train']}.parquet")
    assert response.status_code == 200, response.text
    table = pq.read_table(io.BytesIO(response.content))
    assert table.schema.remove_metadata() == SFT_DATASET.remove_metadata()
    assert table.column("completion").to_pylist() == [r["completion"] for r in ids["rows"]["train"]]
    assert table.schema.metadata[b"dataflywheel.dataset_id"] == str(ids["d_train"]).encode()

    evals = client.get(f"/runs/{ids['run']}/evaluations.parquet")
    assert pq.read_table(io.BytesIO(evals.content)).num_rows == 3


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/datasets/999999.parquet", "dataset 999999 does not exist"),
        ("/runs/999999/evaluations.parquet", "run 999999 does not exist"),
        ("/runs/{run}/rounds/7/samples.parquet", "has no round 7"),
    ],
)
def test_unknown_ids_are_404_json(
    api: tuple[TestClient, dict[str, Any]], path: str, message: str
) -> None:
    client, ids = api
    response = client.get(path.format(run=ids["run"]))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found" and message in response.json()["message"]


def test_a_dataset_file_missing_from_the_store_is_503(
    api: tuple[TestClient, dict[str, Any]], tmp_path: Path
) -> None:
    client, ids = api
    for path in (tmp_path / "objects").rglob("*"):
        if path.is_file() and path.name in ids["files"]["train"]:
            path.unlink()
    response = client.get(f"/datasets/{ids['d_train']}.parquet")
    assert response.status_code == 503 and "cannot read the dataset file" in response.text


def test_exports_need_a_key(api: tuple[TestClient, dict[str, Any]]) -> None:
    client, ids = api
    response = client.get(f"/runs/{ids['run']}/evaluations.parquet", headers={"Authorization": ""})
    assert response.status_code == 401


def test_a_dataset_whose_file_and_members_disagree_is_409_before_streaming(
    api: tuple[TestClient, dict[str, Any]], engine: sa.Engine, tmp_path: Path
) -> None:
    client, ids = api
    short = LocalStore(tmp_path / "objects").put_bytes(
        b'{"prompt": "2 + 2 =", "completion": "4"}\n'
    )
    with engine.begin() as conn:
        conn.execute(
            sa.update(Dataset)
            .where(Dataset.id == ids["d_train"])
            .values(object_key=short.key, digest=short.digest)
        )
    response = client.get(f"/datasets/{ids['d_train']}.parquet")
    assert response.status_code == 409
    assert "has 1 rows, the database records 3 members" in response.json()["message"]
