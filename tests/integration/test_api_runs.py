"""The HTTP API over rows in a real PostgreSQL database: runs, rounds with metrics, samples
(filters and keyset pagination), lineage (the same document as `flywheel lineage --json`),
downloads from the local store, and the bad-input paths (422 naming the field, 404, 503 with
no orphan row when Prefect is down)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from api_support import SAMPLES, make_app, new_key, seed_run
from fastapi.testclient import TestClient

from dataflywheel.db import migrate
from dataflywheel.db.session import session_scope
from dataflywheel.lineage_view import checkpoint_lineage
from dataflywheel.store import LocalStore

VALID_SPEC = {
    "name": "api-run",
    "model": {"source": "builtin:tiny-llama"},
    "prompts": {"kind": "builtin", "family": "addition"},
    "generation": {"max_tokens": 16},
}


@pytest.fixture
def api(engine: sa.Engine, db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, dict]]:
    app = make_app(db_url, tmp_path)
    ids = seed_run(engine, LocalStore(tmp_path / "objects"), tmp_path)
    headers = {"Authorization": f"Bearer {new_key(engine)}"}
    with TestClient(app, headers=headers) as client:
        yield client, ids


def _count_runs(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()


def test_health_and_ready(api: tuple[TestClient, dict]) -> None:
    client, _ = api
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["schema_revision"] == migrate.head()


def test_list_and_get_run_with_rounds_and_metrics(api: tuple[TestClient, dict]) -> None:
    client, ids = api
    listing = client.get("/runs").json()
    assert [r["id"] for r in listing["items"]] == [ids["run"]]
    assert listing["items"][0]["status"] == "succeeded"
    assert client.get("/runs", params={"status": "failed"}).json()["items"] == []

    doc = client.get(f"/runs/{ids['run']}").json()
    assert doc["run"]["name"] == "arith" and doc["spec"] == {
        "name": "arith",
        "rounds": 1,
        "warmup": {"num_prompts": 2},
        "evaluation": {"primary": "accuracy", "metrics": ["accuracy"]},
    }
    rounds = doc["report"]["rounds"]
    assert [r["index"] for r in rounds] == [0, 1]
    assert rounds[1]["eval"]["primary"] == pytest.approx(0.7)
    assert rounds[1]["eval"]["delta"] == pytest.approx(0.3)
    assert rounds[1]["samples"] == 4 and rounds[1]["kept"] == 3
    assert rounds[1]["verifiers"][0]["pass_rate"] == pytest.approx(0.75)
    assert doc["report"]["baseline"]["primary"] == pytest.approx(0.2)

    page = client.get(f"/runs/{ids['run']}/rounds").json()
    assert page["primary_metric"] == "accuracy" and page["rounds"] == rounds
    one = client.get(f"/runs/{ids['run']}/rounds/1").json()
    assert one == rounds[1]
    missing_round = client.get(f"/runs/{ids['run']}/rounds/7")
    assert missing_round.status_code == 404 and "no round 7" in missing_round.json()["message"]


@pytest.mark.parametrize("path", ["/runs/999999", "/runs/999999/rounds", "/runs/999999/rounds/0"])
def test_unknown_run_is_404_json(api: tuple[TestClient, dict], path: str) -> None:
    client, _ = api
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "run 999999 does not exist" in response.json()["message"]


def test_samples_filters(api: tuple[TestClient, dict]) -> None:
    client, ids = api
    p0, p1 = ids["prompts"]

    def found(**params: Any) -> list[tuple[int, int]]:
        response = client.get("/samples", params=params)
        assert response.status_code == 200, response.text
        return [(s["prompt_id"], s["sample_index"]) for s in response.json()["items"]]

    everything = [(p0, 0), (p0, 1), (p1, 0), (p1, 1)]
    assert sorted(found(run_id=ids["run"])) == sorted(everything)
    assert found(run_id=ids["run"] + 1) == []
    assert sorted(found(round_index=1)) == sorted(everything)
    assert found(round_index=0) == []
    assert sorted(found(prompt_id=p1)) == [(p1, 0), (p1, 1)]
    assert found(verifier="exact_answer", passed=False) == [(p1, 1)]
    assert len(found(verifier="exact_answer", passed=True)) == 3
    assert found(verifier="format") == []
    assert found(max_score=0.5) == [(p1, 1)]
    assert found(q="wrong") == [(p1, 1)]
    assert sorted(found(q="3 + 3")) == [(p1, 0), (p1, 1)]  # matches the prompt text
    assert found(q="%") == []  # LIKE wildcards are literal
    assert found(purpose="eval") == []

    sample = client.get("/samples", params={"q": "wrong"}).json()["items"][0]
    assert sample["checkpoint_id"] == ids["c0"] and sample["round_index"] == 1
    assert sample["reference"] == {"answer": "6"} and sample["text"] == SAMPLES[(1, 1)][0]
    assert sample["scores"] == [
        {"verifier": "exact_answer", "version": "v1", "value": 0.0, "passed": False,
         "status": "scored", "reason": "mismatch"}
    ]  # fmt: skip


def test_samples_keyset_pagination_visits_each_sample_once(api: tuple[TestClient, dict]) -> None:
    client, _ = api
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = client.get("/samples", params=params).json()
        seen += [s["id"] for s in page["items"]]
        if page["next_after"] is None:
            break
        params["after_id"] = page["next_after"]
    assert len(seen) == 4 and seen == sorted(set(seen))


def test_prompt_across_rounds(api: tuple[TestClient, dict]) -> None:
    client, ids = api
    doc = client.get(f"/prompts/{ids['prompts'][1]}/samples").json()
    assert doc["prompt_text"] == "3 + 3 ="
    assert [(r["round_index"], len(r["samples"])) for r in doc["rounds"]] == [(1, 2)]
    assert client.get("/prompts/999999/samples").status_code == 404


def test_lineage_is_the_cli_document(api: tuple[TestClient, dict], engine: sa.Engine) -> None:
    client, ids = api
    response = client.get(f"/checkpoints/{ids['c1']}/lineage")
    assert response.status_code == 200
    with session_scope(engine) as session:
        expected = checkpoint_lineage(session, ids["c1"])
    assert response.json() == expected
    assert [c["id"] for c in response.json()["chain"]] == [ids["c1"], ids["c0"], ids["base"]]
    # The training samples of c1: the 3 passing round-1 samples generated by c0.
    assert response.json()["samples_by_round"] == [
        {"run_id": ids["run"], "round_index": 1, "generated_by": ids["c0"], "samples": 3}
    ]
    missing = client.get("/checkpoints/999999/lineage")
    assert missing.status_code == 404 and "999999" in missing.json()["message"]


def test_downloads_from_the_local_store(api: tuple[TestClient, dict]) -> None:
    client, ids = api
    dataset = client.get(f"/datasets/{ids['d_sft']}/download").json()
    assert dataset["object_key"] == ids["dataset_key"] and dataset["expires_in"] is None
    (file,) = dataset["files"]
    body = client.get(file["url"])
    assert body.status_code == 200
    assert hashlib.sha256(body.content).hexdigest() == dataset["digest"]
    assert body.headers["etag"] == f'"{dataset["digest"]}"'

    ckpt = client.get(f"/checkpoints/{ids['c0']}/download").json()
    paths = {f["path"]: f for f in ckpt["files"]}
    assert set(paths) == {"config.json", "model.safetensors", "MANIFEST.json"}
    weights = client.get(paths["model.safetensors"]["url"])
    assert weights.content == b"\x00" * 64
    # Streaming needs the key too.
    assert client.get(paths["config.json"]["url"], headers={"Authorization": ""}).status_code == 401
    # A checkpoint whose upload has not finished has nothing to download yet.
    assert client.get(f"/checkpoints/{ids['c1']}/download").status_code == 409
    assert client.get("/datasets/999999/download").status_code == 404
    assert client.get("/objects/not-a-key").status_code == 404
    assert client.get("/objects/" + "ab" * 32).status_code == 404


def test_invalid_spec_is_422_naming_the_field(
    api: tuple[TestClient, dict], engine: sa.Engine, tmp_path: Path
) -> None:
    client, _ = api
    before = _count_runs(engine)
    bad = {**VALID_SPEC, "generation": {"max_tokens": 16, "temperature": -1}}
    response = client.post("/runs", json=bad)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"
    assert any(line.startswith("generation.temperature:") for line in body["details"]), body
    unknown = client.post("/runs", json={**VALID_SPEC, "colour": "blue"})
    assert unknown.status_code == 422 and "colour" in unknown.json()["message"]
    # An endpoint cannot serve the run's checkpoints: refused before any row is written.
    endpoint = {"backend": "openai", "base_url": "http://localhost:8000/v1", "model_name": "m"}
    openai = client.post("/runs", json={**VALID_SPEC, "generation": endpoint})
    assert openai.status_code == 422
    assert openai.json()["details"][0].startswith("generation.backend: 'openai' cannot"), openai
    # A valid spec whose trainer cannot fit its GPU (full fine-tuning of a 7B model on one
    # 80 GiB GPU): the memory plan refuses it with the fields to change.
    model = tmp_path / "llama-2-7b"
    model.mkdir()
    shape = {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    }
    (model / "config.json").write_text(json.dumps(shape))
    too_big = {
        **VALID_SPEC,
        "model": {"source": str(model)},
        "training": {"mode": "full"},
        "resources": {"generator_gpus": 1, "train_gpus_per_worker": 1},
    }
    refused = client.post("/runs", json=too_big)
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["error"] == "invalid_request"
    assert body["message"].startswith("the memory plan refuses this spec: training: ")
    assert body["details"][0].startswith("training: ") and "training.mode lora" in body["message"]
    assert _count_runs(engine) == before


def test_prefect_down_is_503_and_leaves_no_run_row(
    api: tuple[TestClient, dict], engine: sa.Engine
) -> None:
    client, _ = api
    before = _count_runs(engine)
    response = client.post("/runs", json=VALID_SPEC, headers={"Idempotency-Key": "k1"})
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable"
    assert "Prefect API" in response.json()["message"]
    assert "unreachable" in response.json()["message"]
    assert _count_runs(engine) == before


def test_cancel_refuses_finished_and_unknown_runs(api: tuple[TestClient, dict]) -> None:
    client, ids = api
    done = client.post(f"/runs/{ids['run']}/cancel")
    assert done.status_code == 409 and "succeeded" in done.json()["message"]
    assert client.post("/runs/999999/cancel").status_code == 404


def test_unknown_endpoint_and_bad_params_are_json(api: tuple[TestClient, dict]) -> None:
    client, _ = api
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    bad = client.get("/samples", params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["details"][0].startswith("query limit:")
    assert client.get("/runs/abc").status_code == 422
