"""`flywheel deploy` schedule parsing: good strings become schedules, bad ones are refused with
the expected format (before anything talks to Prefect)."""

from __future__ import annotations

import os
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
