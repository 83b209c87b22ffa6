"""Property-based test of the HTTP API against its own OpenAPI schema (schemathesis): with a
valid key, no generated request gets a 5xx, and every error is a JSON ``{error, message}``.

Prefect is real and up (the session's server, a deployment on a work pool no worker serves,
so accepted runs just wait there): a 503 would be a real failure here. The database holds a
small complete run, so small generated ids hit real rows. Examples per operation are bounded
to keep the test under a minute.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
import yaml
from api_support import make_app, new_key, seed_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from dataflywheel.api.config import ApiConfig
from dataflywheel.deploy import DeployOptions, deploy
from dataflywheel.spec import RunSpec
from dataflywheel.store import LocalStore

FUZZ_DEPLOYMENT = "fuzz"
FUZZ_POOL = "flywheel-fuzz-no-worker"


@pytest.fixture(scope="session")
def fuzz_deployment(prefect_api: str) -> str:
    result = deploy(DeployOptions(name=FUZZ_DEPLOYMENT, work_pool=FUZZ_POOL), prefect_api)
    return result.deployment


@pytest.fixture
def token(engine: sa.Engine) -> str:
    return new_key(engine, "schemathesis")


@pytest.fixture
def api_schema(
    engine: sa.Engine, db_url: str, tmp_path: Path, prefect_api: str, fuzz_deployment: str
) -> tuple[schemathesis.BaseSchema, dict[str, Any]]:
    ids = seed_run(engine, LocalStore(tmp_path / "objects"), tmp_path)
    app = make_app(
        db_url, tmp_path, prefect_api_url=prefect_api, config=ApiConfig(deployment=fuzz_deployment)
    )
    real = {
        "run_id": ids["run"],
        "index": 1,
        "checkpoint_id": ids["c0"],
        "dataset_id": ids["d_sft"],
        "prompt_id": ids["prompts"][0],
        "key": ids["tree_key"],
    }
    return schemathesis.openapi.from_asgi("/openapi.json", app), real


def test_no_server_errors(
    api_schema: tuple[schemathesis.BaseSchema, dict[str, Any]], token: str
) -> None:
    # schemathesis' lazy pytest fixture support does not run on pytest 9, so the operations
    # are walked here, each with its own bounded Hypothesis run: valid data, invalid data
    # (negative mode), and valid data whose path ids name the seeded rows.
    schema, real = api_schema
    headers = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12

    for operation in operations:
        strategies = [
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        ]
        names = re.findall(r"\{(\w+)", operation.path)
        if names:
            pinned = {name: real[name] for name in names}
            strategies.append(
                operation.as_strategy(GenerationMode.POSITIVE, path_parameters=pinned)
            )

        @given(case=st.one_of(strategies))
        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def call(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:500]}"
            )
            if response.status_code >= 400:
                body = response.json()
                assert body["error"] and body["message"], body

        call()


def test_deployment_form_is_the_run_spec_and_schedules_register(
    prefect_api: str, fuzz_deployment: str, tiny_spec: dict, tmp_path: Path
) -> None:
    """The deployment's parameter schema (the Prefect UI's form) is the RunSpec with every
    field's description and default; a cron schedule and a spec's defaults register."""
    from prefect.client.orchestration import SyncPrefectClient

    from dataflywheel.deploy import GPU_TAG, parse_schedule
    from dataflywheel.spec import GenerationSpec

    spec_file = tmp_path / "nightly.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    nightly = deploy(
        DeployOptions(
            name="nightly",
            work_pool=FUZZ_POOL,
            schedule=parse_schedule(cron="0 3 * * *", timezone="Europe/Paris"),
            spec_path=spec_file,
            gpu_slots=2,
        ),
        prefect_api,
    )
    with SyncPrefectClient(prefect_api) as client:
        form = client.read_deployment_by_name(fuzz_deployment)
        scheduled = client.read_deployment_by_name(nightly.deployment)
        gpu_limit = client.read_concurrency_limit_by_tag(GPU_TAG).concurrency_limit
        rescore = client.read_deployment_by_name(f"rescore/{FUZZ_DEPLOYMENT}")
        replay = client.read_deployment_by_name(f"flywheel_replay/{FUZZ_DEPLOYMENT}")
        nightly_rescore = client.read_deployment_by_name("rescore/nightly")

    schema = form.parameter_openapi_schema
    assert schema["required"] == ["spec"]
    assert schema["properties"]["spec"]["$ref"] == "#/definitions/RunSpec"
    definitions = schema["definitions"]
    for model in (RunSpec, GenerationSpec):
        shown = definitions[model.__name__]["properties"]
        for name, field in model.model_fields.items():
            assert shown[name]["description"] == field.description, (model.__name__, name)
    assert definitions["GenerationSpec"]["properties"]["temperature"]["default"] == (
        GenerationSpec.model_fields["temperature"].default
    )
    assert form.enforce_parameter_schema and form.work_pool_name == FUZZ_POOL

    (schedule,) = scheduled.schedules
    assert schedule.schedule.cron == "0 3 * * *"
    assert schedule.schedule.timezone == "Europe/Paris"
    expected = RunSpec.model_validate(tiny_spec).model_dump(mode="json")
    assert scheduled.parameters["spec"] == expected
    assert scheduled.global_concurrency_limit is not None
    assert scheduled.global_concurrency_limit.limit == 2
    assert gpu_limit == 2

    # rescore and replay are deployed beside it, each with the typed form of its signature;
    # the schedule and the spec's defaults stay with flywheel_run.
    assert [r.flow for r in nightly.registered] == ["flywheel_run", "rescore", "flywheel_replay"]
    rescore_form = rescore.parameter_openapi_schema
    assert rescore_form["required"] == ["run_id"]
    assert rescore_form["properties"]["run_id"]["type"] == "integer"
    configs = rescore_form["properties"]["configs"]["anyOf"][0]["items"]
    assert configs["discriminator"]["propertyName"] == "name"
    assert "LlmJudgeConfig" in rescore_form["definitions"]
    assert replay.parameter_openapi_schema["required"] == ["run_id", "index"]
    for deployment in (form, rescore, replay):
        assert deployment.enforce_parameter_schema and deployment.work_pool_name == FUZZ_POOL
        # Flow runs start with Prefect's result persistence off, like infra/prefect.yaml.
        assert deployment.job_variables["env"] == {"PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false"}
    assert nightly_rescore.schedules == [] and nightly_rescore.parameters == {}


def test_create_then_cancel_a_run_that_no_worker_picked_up(
    engine: sa.Engine,
    db_url: str,
    tmp_path: Path,
    prefect_api: str,
    fuzz_deployment: str,
    token: str,
    tiny_spec: dict,
) -> None:
    """On a pool no worker serves, the created flow run waits; cancelling it cancels it in
    Prefect and marks our run cancelled; an idempotent retry returns the same run."""
    from fastapi.testclient import TestClient
    from prefect.client.orchestration import SyncPrefectClient

    app = make_app(
        db_url, tmp_path, prefect_api_url=prefect_api, config=ApiConfig(deployment=fuzz_deployment)
    )
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "nightly-42"}
    with TestClient(app, headers=headers) as client:
        created = client.post("/runs", json=tiny_spec)
        assert created.status_code == 201, created.text
        run_id, flow_run_id = created.json()["run_id"], created.json()["prefect_flow_run_id"]
        again = client.post("/runs", json=tiny_spec)
        assert again.status_code == 200
        assert (again.json()["run_id"], again.json()["prefect_flow_run_id"]) == (
            run_id,
            flow_run_id,
        )
        with SyncPrefectClient(prefect_api) as prefect:
            waiting = prefect.read_flow_run(flow_run_id)
            assert waiting.parameters == {
                "spec": RunSpec.model_validate(tiny_spec).model_dump(mode="json"),
                "run_id": run_id,
            }
            cancelled = client.post(f"/runs/{run_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json() == {
                "run_id": run_id,
                "status": "cancelled",
                "prefect_state": "CANCELLED",
            }
            assert prefect.read_flow_run(flow_run_id).state.is_cancelled()
        assert client.get(f"/runs/{run_id}").json()["run"]["status"] == "cancelled"
        assert client.post(f"/runs/{run_id}/cancel").status_code == 409
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == 1
