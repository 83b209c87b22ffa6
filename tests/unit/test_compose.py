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
