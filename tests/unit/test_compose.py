"""docker-compose.yml and infra/ checked structurally (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dataflywheel.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_dependencies() -> None:
    services = _compose()["services"]
    assert {"postgres", "minio", "create-bucket", "migrate"} <= set(services)
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["minio"]
    migrate = services["migrate"]
    assert migrate["command"] == ["flywheel", "db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["depends_on"]["create-bucket"]["condition"] == "service_completed_successfully"
    for name, volume in (("postgres", "postgres-data"), ("minio", "minio-data")):
        assert any(v.startswith(f"{volume}:") for v in services[name]["volumes"])
        assert volume in _compose()["volumes"]


def test_flywheel_environment_names_real_settings() -> None:
    env = _compose()["services"]["migrate"]["environment"]
    fields = {f"FLYWHEEL_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, f"unknown settings: {set(env) - fields}"
    assert env["FLYWHEEL_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["FLYWHEEL_STORE_URI"].startswith("s3://")


def test_env_example_covers_every_variable_the_compose_file_uses() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= example, f"missing from .env.example: {used - example}"


def test_dockerfiles_copy_paths_that_exist() -> None:
    for dockerfile in (ROOT / "infra").glob("Dockerfile.*"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} missing"


# --- the control plane: Prefect server and worker, Ray head and GPU worker, API ---


def _prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "infra" / "prefect.yaml").read_text())


def _workdir(dockerfile: str) -> str:
    lines = (ROOT / "infra" / dockerfile).read_text().splitlines()
    return [line.split()[1] for line in lines if line.startswith("WORKDIR ")][-1]


def test_prefect_server_runs_on_postgres() -> None:
    services = _compose()["services"]
    server = services["prefect-server"]
    url = server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://") and url.endswith("@postgres:5432/prefect")
    assert (
        server["depends_on"]["create-prefect-db"]["condition"] == "service_completed_successfully"
    )
    assert "CREATE DATABASE prefect" in services["create-prefect-db"]["entrypoint"]
    assert services["create-prefect-db"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in server and "4200:4200" in server["ports"]


def test_worker_serves_the_pool_the_deployment_targets() -> None:
    from dataflywheel.deploy import DEFAULT_POOL, ENTRYPOINTS

    services = _compose()["services"]
    worker = services["prefect-worker"]
    command = worker["command"]
    assert command[:3] == ["prefect", "worker", "start"]
    pool = command[command.index("--pool") + 1]
    assert command[command.index("--type") + 1] == "process"
    deployments = _prefect_yaml()["deployments"]
    assert {d["work_pool"]["name"] for d in deployments} == {pool} == {DEFAULT_POOL}
    assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker["environment"]["FLYWHEEL_RAY_ADDRESS"] == "ray-head:6379"
    assert worker["depends_on"]["deploy"]["condition"] == "service_completed_successfully"
    # The deployment's code location is the image's checkout, for both registration paths.
    deploy = services["deploy"]["command"]
    assert deploy[:2] == ["flywheel", "deploy"]
    app_dir = _workdir("Dockerfile.cpu")
    assert deploy[deploy.index("--source") + 1] == app_dir
    pull = _prefect_yaml()["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull["directory"] == app_dir
    for d in deployments:
        path, _, name = d["entrypoint"].partition(":")
        assert (ROOT / path).is_file() and f"def {name}(" in (ROOT / path).read_text()
        assert d["entrypoint"] in ENTRYPOINTS.values()


def test_ray_head_and_gpu_worker() -> None:
    services = _compose()["services"]
    head = services["ray-head"]["command"]
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    port = next(a.split("=", 1)[1] for a in head if a.startswith("--port="))
    gpu = services["ray-gpu-worker"]
    assert gpu["build"]["dockerfile"] == "infra/Dockerfile.gpu"
    assert f"--address=ray-head:{port}" in gpu["command"] and "--block" in gpu["command"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_api_service_is_wired_to_prefect_and_the_database() -> None:
    from dataflywheel.api.config import ApiConfig

    services = _compose()["services"]
    api = services["api"]
    command = api["command"]
    assert command[:2] == ["flywheel", "api"] and command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    assert f"{port}:{port}" in api["ports"]
    env = api["environment"]
    known = {f"FLYWHEEL_{n.upper()}" for n in Settings.model_fields} | {
        f"FLYWHEEL_API_{n.upper()}" for n in ApiConfig.model_fields
    }
    assert {k for k in env if k.startswith("FLYWHEEL_")} <= known
    flow = "flywheel_run"
    names = {d["name"] for d in _prefect_yaml()["deployments"]}
    assert env["FLYWHEEL_API_DEPLOYMENT"] in {f"{flow}/{n}" for n in names}
    assert env["FLYWHEEL_PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in api
