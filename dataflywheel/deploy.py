"""``flywheel deploy``: register ``flywheel_run`` as a Prefect deployment on a process work
pool, with an optional cron/interval schedule and GPU concurrency limits.

Runs in: the CLI process. The flow is loaded with ``flow.from_source(<checkout>,
"flows/flywheel_run.py:flywheel_run")`` — an entrypoint string, so the core never imports
``flows`` — and its parameter schema is the ``RunSpec`` (field descriptions and defaults
included), which is what makes the Prefect UI render a typed form. A process worker started
in the same checkout (``prefect worker start --pool flywheel``) runs the flow runs there;
they reach Ray through ``FLYWHEEL_RAY_ADDRESS`` like any other run.

Queueing instead of fighting over GPUs, at two levels (see docs/api.md):

* the deployment's ``concurrency_limit`` (= ``--gpu-slots``): at most that many runs of the
  deployment execute at once; further runs wait in ``AwaitingConcurrencySlot``;
* a tag concurrency limit on :data:`GPU_TAG`: task runs tagged ``gpu`` (the GPU-bound
  stages: generation, training, evaluation) take a slot each, so runs started outside the
  deployment (``flywheel run``) queue on the same GPUs.

``parse_schedule`` is pure and refuses a bad schedule with the expected format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FLOW_NAME = "flywheel_run"
DEFAULT_DEPLOYMENT = "flywheel"
DEFAULT_POOL = "flywheel"
GPU_TAG = "gpu"
# Deployable flows by name -> entrypoint relative to the checkout (rescore joins when its flow
# lands).
ENTRYPOINTS = {
    FLOW_NAME: "flows/flywheel_run.py:flywheel_run",
    "flywheel_replay": "flows/replay.py:flywheel_replay",
}
CRON_FORMAT = (
    "5 space-separated fields 'minute hour day-of-month month day-of-week', "
    "e.g. '0 3 * * *' (03:00 every day) or '*/30 * * * *' (every 30 minutes)"
)
INTERVAL_FORMAT = "<number><unit> with unit s, m, h or d (e.g. 90s, 30m, 6h, 1d), or seconds"
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.I)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ScheduleError(ValueError):
    """A schedule string that does not parse; the message shows the expected format."""


class ScheduleSpec(BaseModel):
    """A deployment schedule from the command line."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["cron", "interval"] = Field(description="cron or interval.")
    cron: str | None = Field(None, description="The cron expression (kind cron).")
    seconds: float | None = Field(None, gt=0, description="Seconds between runs (kind interval).")
    timezone: str | None = Field(None, description="IANA time zone, e.g. Europe/Paris.")


def parse_schedule(
    *, cron: str | None = None, interval: str | None = None, timezone: str | None = None
) -> ScheduleSpec | None:
    """``--cron``/``--interval`` as a schedule (None: neither given); raises
    :class:`ScheduleError` naming the option and the expected format."""
    if cron is not None and interval is not None:
        raise ScheduleError("give either --cron or --interval, not both")
    if cron is not None:
        from prefect.client.schemas.schedules import CronSchedule
        from pydantic import ValidationError

        fields = cron.split()
        if len(fields) != 5:
            raise ScheduleError(
                f"--cron {cron!r}: has {len(fields)} field(s); expected {CRON_FORMAT}"
            )
        try:
            CronSchedule(cron=cron, timezone=timezone)
        except ValidationError as exc:
            error = exc.errors()[0]
            problem = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            if "timezone" in str(error.get("loc")):
                raise ScheduleError(
                    f"--timezone: {problem}; use an IANA time zone such as Europe/Paris"
                ) from None
            raise ScheduleError(f"--cron: {problem}; expected {CRON_FORMAT}") from None
        return ScheduleSpec(kind="cron", cron=cron, timezone=timezone)
    if interval is not None:
        match = _INTERVAL.match(interval)
        if not match or float(match.group(1)) <= 0:
            raise ScheduleError(f"--interval {interval!r}: expected {INTERVAL_FORMAT}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        return ScheduleSpec(kind="interval", seconds=seconds, timezone=timezone)
    if timezone is not None:
        raise ScheduleError("--timezone needs a schedule: add --cron or --interval")
    return None


class DeployOptions(BaseModel):
    """What ``flywheel deploy`` registers."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(DEFAULT_DEPLOYMENT, min_length=1, description="Deployment name.")
    flow: str = Field(FLOW_NAME, description=f"Flow to deploy: one of {sorted(ENTRYPOINTS)}.")
    work_pool: str = Field(DEFAULT_POOL, min_length=1, description="Process work pool name.")
    schedule: ScheduleSpec | None = Field(None, description="Cron or interval schedule.")
    spec_path: Path | None = Field(
        None, description="Run spec file: the default parameters of scheduled runs."
    )
    gpu_slots: int = Field(1, ge=1, description="Concurrent runs / GPU-bound task runs.")
    source: Path | None = Field(
        None, description="Checkout the worker runs the flow from (default: this code's)."
    )


@dataclass(frozen=True)
class DeployResult:
    deployment_id: str
    deployment: str  # "flow/deployment"
    work_pool: str
    pool_created: bool
    source: Path
    schedule: ScheduleSpec | None
    gpu_slots: int


def checkout_root() -> Path:
    """The checkout this package runs from (its ``flows/`` sits beside ``dataflywheel/``)."""
    return Path(__file__).resolve().parent.parent


def _prefect_schedule(spec: ScheduleSpec) -> Any:
    from prefect.schedules import Cron, Interval

    if spec.kind == "cron":
        assert spec.cron is not None
        return Cron(spec.cron, timezone=spec.timezone)
    assert spec.seconds is not None
    return Interval(timedelta(seconds=spec.seconds), timezone=spec.timezone)


def ensure_work_pool(client: Any, name: str) -> bool:
    """Create a process work pool named ``name`` unless it exists; True when created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        pass
    else:
        if pool.type != "process":
            raise ValueError(
                f"work pool {name!r} exists with type {pool.type!r}; flywheel deploy needs a "
                "process pool: pass --pool with another name"
            )
        return False
    try:
        client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
                description="dataflywheel flow runs (process worker; model work goes to Ray)",
            )
        )
    except ObjectAlreadyExists:
        return False
    return True


def ensure_gpu_limit(client: Any, slots: int) -> None:
    """The tag concurrency limit on :data:`GPU_TAG` (updated to ``slots`` if it exists)."""
    # create_concurrency_limit upserts by tag on the server.
    client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=slots)


def deploy(options: DeployOptions, api_url: str) -> DeployResult:
    """Register the deployment on the Prefect server at ``api_url``."""
    from prefect import flow
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if options.flow not in ENTRYPOINTS:
        raise ValueError(f"flow {options.flow!r}: deployable flows are {sorted(ENTRYPOINTS)}")
    parameters: dict[str, Any] = {}
    if options.spec_path is not None and options.flow != FLOW_NAME:
        raise ValueError(f"--spec only applies to {FLOW_NAME}, not {options.flow}")
    if options.spec_path is not None:
        from dataflywheel.spec import load_spec

        parameters["spec"] = load_spec(options.spec_path).model_dump(mode="json")
    elif options.schedule is not None and options.flow == FLOW_NAME:
        raise ScheduleError(
            "a schedule needs --spec SPEC.yaml: scheduled runs have no one to fill in the form"
        )
    source = (options.source or checkout_root()).resolve()
    entrypoint = ENTRYPOINTS[options.flow]
    if not (source / entrypoint.split(":")[0]).is_file():
        raise ValueError(f"--source {source}: {entrypoint.split(':')[0]} not found there")
    with SyncPrefectClient(api_url) as client:
        created = ensure_work_pool(client, options.work_pool)
        ensure_gpu_limit(client, options.gpu_slots)
    with temporary_settings({PREFECT_API_URL: api_url}):
        loaded = flow.from_source(source=str(source), entrypoint=entrypoint)
        deployment_id = loaded.deploy(
            name=options.name,
            work_pool_name=options.work_pool,
            build=False,
            push=False,
            schedule=_prefect_schedule(options.schedule) if options.schedule else None,
            parameters=parameters or None,
            concurrency_limit=options.gpu_slots,
            tags=["dataflywheel"],
            description="A dataflywheel run: generate → verify → select → train → evaluate → "
            "promote, for the rounds the spec asks.",
            print_next_steps=False,
            ignore_warnings=True,
        )
    return DeployResult(
        deployment_id=str(deployment_id),
        deployment=f"{options.flow}/{options.name}",
        work_pool=options.work_pool,
        pool_created=created,
        source=source,
        schedule=options.schedule,
        gpu_slots=options.gpu_slots,
    )


def next_steps(result: DeployResult, api_url: str) -> str:
    """What to run next: the worker, and how to start a run."""
    when = "no schedule (runs start from the UI, the API or `prefect deployment run`)"
    if result.schedule is not None:
        s = result.schedule
        when = f"cron {s.cron!r}" if s.kind == "cron" else f"every {s.seconds:g} s"
        when += f" ({s.timezone})" if s.timezone else ""
    return "\n".join(
        [
            f"deployment {result.deployment} ({result.deployment_id}) registered: {when}",
            f"work pool {result.work_pool!r} (process){' created' if result.pool_created else ''};"
            f" at most {result.gpu_slots} run(s) at once, tag '{GPU_TAG}' limited to "
            f"{result.gpu_slots} task run(s)",
            "start a worker in the checkout, with the same FLYWHEEL_* settings as the API:",
            f"  cd {result.source} && PREFECT_API_URL={api_url} prefect worker start "
            f"--pool {result.work_pool} --type process",
            "start a run: POST /runs on `flywheel api`, or the Prefect UI (Deployments → "
            f"{result.deployment} → Run → Custom run: the parameter form)",
        ]
    )
