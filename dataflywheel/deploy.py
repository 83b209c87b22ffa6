"""``flywheel deploy``: register dataflywheel's flows as Prefect deployments on a process work
pool — ``flywheel_run`` (with an optional cron/interval schedule), ``rescore`` and
``flywheel_replay`` — with GPU concurrency limits.

Runs in: the CLI process. Each flow is loaded with ``flow.from_source(<checkout>,
"flows/<module>.py:<flow>")`` — an entrypoint string, so the core never imports ``flows`` —
and its parameter schema is generated from the flow's typed signature and docstring:
``flywheel_run``'s ``spec`` is the ``RunSpec`` (field descriptions and defaults included),
``rescore``'s ``configs`` the verifier configurations, so the Prefect UI renders a typed form
for each. A process worker started in the same checkout (``prefect worker start --pool
flywheel``) runs the flow runs there; they reach Ray through ``FLYWHEEL_RAY_ADDRESS`` like any
other run, and their environment states that Prefect persists no results
(:data:`JOB_ENV`; the ledger in PostgreSQL is what makes retries skip finished work, see
docs/architecture.md).

Queueing instead of fighting over GPUs, at two levels (see docs/api.md):

* each deployment's ``concurrency_limit`` (= ``--gpu-slots``): at most that many runs of the
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
RESCORE_FLOW = "rescore"
REPLAY_FLOW = "flywheel_replay"
DEFAULT_DEPLOYMENT = "flywheel"
DEFAULT_POOL = "flywheel"
GPU_TAG = "gpu"
# Deployable flows by name -> entrypoint relative to the checkout (infra/prefect.yaml lists
# the same three).
ENTRYPOINTS = {
    FLOW_NAME: "flows/flywheel_run.py:flywheel_run",
    RESCORE_FLOW: "flows/rescore.py:rescore",
    REPLAY_FLOW: "flows/replay.py:flywheel_replay",
}
DESCRIPTIONS = {
    FLOW_NAME: "A dataflywheel run: generate → verify → select → train → evaluate → promote, "
    "for the rounds the spec asks.",
    RESCORE_FLOW: "Score a run's stored samples again with named verifiers, without "
    "regenerating; a new verifier version adds rows beside the old ones.",
    REPLAY_FLOW: "Re-execute one finished round of a run into a new run marked as its replay "
    "(`flywheel diff` compares them).",
}
# The flow runs' environment: Prefect persists no task or flow results (every task and flow
# also says persist_result=False; PostgreSQL and the shard ledger are the record).
JOB_ENV = {"PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false"}
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
    flows: tuple[str, ...] = Field(
        tuple(ENTRYPOINTS),
        min_length=1,
        description=f"Flows to deploy, each named {DEFAULT_DEPLOYMENT!r} by default: any of "
        f"{list(ENTRYPOINTS)}.",
    )
    work_pool: str = Field(DEFAULT_POOL, min_length=1, description="Process work pool name.")
    schedule: ScheduleSpec | None = Field(None, description="Cron or interval schedule.")
    spec_path: Path | None = Field(
        None, description="Run spec file: the default parameters of scheduled runs."
    )
    gpu_slots: int = Field(
        1, ge=1, description="Concurrent runs of each deployment / GPU-bound task runs."
    )
    source: Path | None = Field(
        None, description="Checkout the worker runs the flow from (default: this code's)."
    )


@dataclass(frozen=True)
class Registered:
    """One deployment ``flywheel deploy`` registered."""

    flow: str
    deployment: str  # "flow/deployment"
    deployment_id: str
    schedule: ScheduleSpec | None


@dataclass(frozen=True)
class DeployResult:
    registered: tuple[Registered, ...]
    work_pool: str
    pool_created: bool
    source: Path
    gpu_slots: int

    @property
    def deployment(self) -> str:
        """The ``flywheel_run`` deployment as "flow/deployment": what ``POST /runs`` starts."""
        for r in self.registered:
            if r.flow == FLOW_NAME:
                return r.deployment
        raise LookupError(f"{FLOW_NAME} was not deployed (flows: {self.flows})")

    @property
    def flows(self) -> list[str]:
        return [r.flow for r in self.registered]


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


def check_options(options: DeployOptions) -> None:
    """Refuse options that cannot make sense, before anything talks to Prefect: unknown
    flows, and a schedule or spec defaults without ``flywheel_run`` to apply to."""
    unknown = [f for f in options.flows if f not in ENTRYPOINTS]
    if unknown:
        raise ValueError(f"--flow {unknown[0]!r}: deployable flows are {list(ENTRYPOINTS)}")
    runs = FLOW_NAME in options.flows
    if options.spec_path is not None and not runs:
        raise ValueError(f"--spec only applies to {FLOW_NAME}: add --flow {FLOW_NAME}")
    if options.schedule is not None and not runs:
        raise ScheduleError(f"a schedule applies to {FLOW_NAME} only: add --flow {FLOW_NAME}")
    if options.schedule is not None and options.spec_path is None:
        raise ScheduleError(
            "a schedule needs --spec SPEC.yaml: scheduled runs have no one to fill in the form"
        )


def deploy(options: DeployOptions, api_url: str) -> DeployResult:
    """Register ``options.flows`` as deployments on the Prefect server at ``api_url``."""
    from prefect import flow
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_API_URL, temporary_settings

    check_options(options)
    parameters: dict[str, Any] = {}
    if options.spec_path is not None:
        from dataflywheel.spec import load_spec

        parameters["spec"] = load_spec(options.spec_path).model_dump(mode="json")
    source = (options.source or checkout_root()).resolve()
    for name in options.flows:
        path = ENTRYPOINTS[name].split(":")[0]
        if not (source / path).is_file():
            raise ValueError(f"--source {source}: {path} not found there")
    with SyncPrefectClient(api_url) as client:
        created = ensure_work_pool(client, options.work_pool)
        ensure_gpu_limit(client, options.gpu_slots)
    registered = []
    with temporary_settings({PREFECT_API_URL: api_url}):
        for name in options.flows:
            # The schedule and the spec's defaults belong to flywheel_run; rescore and replay
            # runs name the run (and round) they work on, so they start on demand.
            schedule = options.schedule if name == FLOW_NAME else None
            loaded = flow.from_source(source=str(source), entrypoint=ENTRYPOINTS[name])
            deployment_id = loaded.deploy(
                name=options.name,
                work_pool_name=options.work_pool,
                build=False,
                push=False,
                schedule=_prefect_schedule(schedule) if schedule else None,
                parameters=(parameters or None) if name == FLOW_NAME else None,
                concurrency_limit=options.gpu_slots,
                job_variables={"env": dict(JOB_ENV)},
                tags=["dataflywheel"],
                description=DESCRIPTIONS[name],
                print_next_steps=False,
                ignore_warnings=True,
            )
            registered.append(
                Registered(name, f"{name}/{options.name}", str(deployment_id), schedule)
            )
    return DeployResult(
        registered=tuple(registered),
        work_pool=options.work_pool,
        pool_created=created,
        source=source,
        gpu_slots=options.gpu_slots,
    )


def next_steps(result: DeployResult, api_url: str) -> str:
    """What to run next: the worker, and how to start each flow."""
    lines = []
    for r in result.registered:
        when = "no schedule (runs start from the UI, the API or `prefect deployment run`)"
        if r.schedule is not None:
            s = r.schedule
            when = f"cron {s.cron!r}" if s.kind == "cron" else f"every {s.seconds:g} s"
            when += f" ({s.timezone})" if s.timezone else ""
        lines.append(f"deployment {r.deployment} ({r.deployment_id}) registered: {when}")
    started = {r.flow: r.deployment for r in result.registered}
    lines += [
        f"work pool {result.work_pool!r} (process){' created' if result.pool_created else ''};"
        f" at most {result.gpu_slots} run(s) of each deployment at once, tag '{GPU_TAG}' "
        f"limited to {result.gpu_slots} task run(s)",
        "start a worker in the checkout, with the same FLYWHEEL_* settings as the API:",
        f"  cd {result.source} && PREFECT_API_URL={api_url} prefect worker start "
        f"--pool {result.work_pool} --type process",
    ]
    if FLOW_NAME in started:
        lines.append(
            "start a run: POST /runs on `flywheel api`, or the Prefect UI (Deployments → "
            f"{started[FLOW_NAME]} → Run → Custom run: the parameter form)"
        )
    if RESCORE_FLOW in started:
        lines.append(
            f"rescore: prefect deployment run '{started[RESCORE_FLOW]}' --param run_id=RUN_ID "
            "--param verifiers='[\"exact_answer\"]'"
        )
    if REPLAY_FLOW in started:
        lines.append(
            f"replay: prefect deployment run '{started[REPLAY_FLOW]}' --param run_id=RUN_ID "
            "--param index=K"
        )
    return "\n".join(lines)
