"""`flywheel deploy`: schedule parsing (good strings become schedules, bad ones are refused with
the expected format), which flows it registers and the options that only apply to
flywheel_run (refused before anything talks to Prefect), and the typed parameter form each
deployable flow gets. Registration on a real Prefect server: tests/e2e/test_api_schema.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from dataflywheel.deploy import ScheduleError, ScheduleSpec, parse_schedule


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, None),
        ({"cron": "0 3 * * *"}, ScheduleSpec(kind="cron", cron="0 3 * * *")),
        (
            {"cron": "*/30 * * * 1-5", "timezone": "Europe/Paris"},
            ScheduleSpec(kind="cron", cron="*/30 * * * 1-5", timezone="Europe/Paris"),
        ),
        ({"interval": "90"}, ScheduleSpec(kind="interval", seconds=90)),
        ({"interval": "90s"}, ScheduleSpec(kind="interval", seconds=90)),
        ({"interval": "30m"}, ScheduleSpec(kind="interval", seconds=1800)),
        ({"interval": "6h"}, ScheduleSpec(kind="interval", seconds=21600)),
        ({"interval": "1.5d"}, ScheduleSpec(kind="interval", seconds=129600)),
    ],
)
def test_schedules_that_parse(kwargs: dict, expected: ScheduleSpec | None) -> None:
    assert parse_schedule(**kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "0 3 * *"}, "has 4 field(s); expected 5 space-separated fields"),
        ({"cron": "61 3 * * *"}, "--cron: Invalid cron string"),
        ({"cron": "every day"}, "expected 5 space-separated fields 'minute hour"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Base"}, "--timezone: Invalid timezone"),
        ({"interval": "5x"}, "expected <number><unit> with unit s, m, h or d"),
        ({"interval": "0"}, "expected <number><unit>"),
        ({"interval": "-5m"}, "expected <number><unit>"),
        ({"cron": "0 3 * * *", "interval": "1h"}, "either --cron or --interval"),
        ({"timezone": "UTC"}, "--timezone needs a schedule"),
    ],
)
def test_bad_schedules_are_refused_with_the_format(kwargs: dict, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(**kwargs)
    assert message in str(caught.value)


def test_the_command_refuses_a_bad_schedule_before_contacting_prefect() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "PREFECT_"))}
    # An API nobody serves: reaching it would be a different error than the schedule's.
    env["FLYWHEEL_PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    result = subprocess.run(
        [sys.executable, "-m", "dataflywheel.cli", "deploy", "--cron", "0 3 * *"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "--cron '0 3 * *': has 4 field(s); expected 5 space-separated fields" in result.stderr


# --- which flows `flywheel deploy` registers, and the forms they get --------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"flows": ("flywheel_run", "nope")}, "--flow 'nope': deployable flows are"),
        ({"flows": ("rescore",), "spec_path": "s.yaml"}, "--spec only applies to flywheel_run"),
        (
            {
                "flows": ("rescore", "flywheel_replay"),
                "schedule": {"kind": "cron", "cron": "0 3 * * *"},
            },
            "a schedule applies to flywheel_run only",
        ),
        ({"schedule": {"kind": "interval", "seconds": 60}}, "a schedule needs --spec SPEC.yaml"),
    ],
)
def test_options_that_cannot_apply_are_refused(options: dict, message: str) -> None:
    from dataflywheel.deploy import DeployOptions, check_options

    with pytest.raises(ValueError, match=re.escape(message)):
        check_options(DeployOptions.model_validate(options))


def test_default_options_deploy_run_rescore_and_replay() -> None:
    from dataflywheel.deploy import ENTRYPOINTS, DeployOptions, check_options

    options = DeployOptions()
    check_options(options)
    assert options.flows == ("flywheel_run", "rescore", "flywheel_replay") == tuple(ENTRYPOINTS)


def _schema(flow_name: str) -> dict:
    """The parameter schema Prefect generates for a deployable flow (what `deploy` sends)."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    from dataflywheel.deploy import ENTRYPOINTS, checkout_root

    path, _, name = ENTRYPOINTS[flow_name].partition(":")
    flow = load_flow_from_entrypoint(f"{checkout_root() / path}:{name}")
    assert flow.name == flow_name
    return parameter_schema(flow).model_dump_for_openapi()


def test_each_deployable_flow_has_a_typed_described_form() -> None:
    run = _schema("flywheel_run")
    assert run["required"] == ["spec"]
    assert run["properties"]["spec"]["$ref"] == "#/definitions/RunSpec"

    rescore = _schema("rescore")
    props = rescore["properties"]
    assert rescore["required"] == ["run_id"] and props["run_id"]["type"] == "integer"
    assert props["verifiers"]["anyOf"][0] == {"items": {"type": "string"}, "type": "array"}
    assert props["purposes"]["anyOf"][0]["items"]["enum"] == ["train", "eval", "baseline"]
    configs = props["configs"]["anyOf"][0]["items"]
    assert configs["discriminator"]["propertyName"] == "name"
    assert {"#/definitions/LlmJudgeConfig", "#/definitions/RewardModelConfig"} <= {
        c["$ref"] for c in configs["oneOf"]
    }
    assert rescore["definitions"]["LlmJudgeConfig"]["properties"]["rubric"]["description"]

    replay = _schema("flywheel_replay")
    assert replay["required"] == ["run_id", "index"]
    assert replay["properties"]["index"]["type"] == "integer"
    for schema in (run, rescore, replay):  # every parameter says what it is for
        assert all(p.get("description") for p in schema["properties"].values()), schema


def test_the_command_refuses_a_schedule_without_flywheel_run_before_contacting_prefect() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "PREFECT_"))}
    env["FLYWHEEL_PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    result = subprocess.run(
        [sys.executable, "-m", "dataflywheel.cli", "deploy", "--flow", "rescore",
         "--flow", "flywheel_replay", "--interval", "6h"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "a schedule applies to flywheel_run only: add --flow flywheel_run" in result.stderr


def test_prefect_yaml_declares_the_same_deployments() -> None:
    """`prefect deploy --prefect-file infra/prefect.yaml --all` and `flywheel deploy` register
    the same flows under the same names, with enforced parameter schemas."""
    import yaml

    from dataflywheel.deploy import DEFAULT_DEPLOYMENT, DEFAULT_POOL, ENTRYPOINTS, checkout_root

    declared = yaml.safe_load((checkout_root() / "infra" / "prefect.yaml").read_text())
    deployments = declared["deployments"]
    assert [d["entrypoint"] for d in deployments] == list(ENTRYPOINTS.values())
    for d in deployments:
        assert d["name"] == DEFAULT_DEPLOYMENT and d["work_pool"]["name"] == DEFAULT_POOL
        assert d["enforce_parameter_schema"] is True
