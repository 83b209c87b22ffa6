"""Settings and URL handling."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dataflywheel.config import Settings
from dataflywheel.db.session import DatabaseUnavailable, normalize_url, redact


def test_defaults_live_under_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("FLYWHEEL_DATA_DIR", "FLYWHEEL_STORE_URI", "FLYWHEEL_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings()
    assert settings.resolved_data_dir == tmp_path / ".flywheel"
    assert settings.embedded_pgdata == tmp_path / ".flywheel" / "postgres"
    assert settings.resolved_store_uri == str(tmp_path / ".flywheel" / "objects")
    assert settings.database_url is None


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("FLYWHEEL_STORE_URI", "s3://bucket/prefix")
    monkeypatch.setenv("FLYWHEEL_S3_SECRET_ACCESS_KEY", "hunter2")
    settings = Settings()
    assert settings.resolved_data_dir == tmp_path / "d"
    assert settings.resolved_store_uri == "s3://bucket/prefix"
    assert "hunter2" not in repr(settings)  # secrets never show in reprs or logs


def test_non_postgres_database_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", "sqlite:///x.db")
    with pytest.raises(ValidationError, match="FLYWHEEL_DATABASE_URL must be a PostgreSQL URL"):
        Settings()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
        ("postgresql://u:p@h/d", "postgresql+psycopg://u:p@h/d"),
        ("postgresql+psycopg://u@/d?host=/tmp/s", "postgresql+psycopg://u@/d?host=%2Ftmp%2Fs"),
    ],
)
def test_normalize_url_forces_psycopg3(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


def test_normalize_url_refuses_other_databases() -> None:
    with pytest.raises(DatabaseUnavailable, match="not a PostgreSQL URL"):
        normalize_url("mysql://u:p@h/d")


def test_redact_hides_the_password() -> None:
    assert "s3cret" not in redact("postgresql://u:s3cret@h:5432/d")
    assert redact("postgresql://u:s3cret@h:5432/d").startswith("postgresql://u:***@h:5432")


def test_openlineage_is_off_by_default_its_key_secret_its_url_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for var in ("FLYWHEEL_OPENLINEAGE_URL", "FLYWHEEL_OPENLINEAGE_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings()
    assert settings.openlineage_url is None and settings.openlineage_namespace == "dataflywheel"
    monkeypatch.setenv("FLYWHEEL_OPENLINEAGE_URL", "http://marquez:5000")
    monkeypatch.setenv("FLYWHEEL_OPENLINEAGE_API_KEY", "hunter2")
    settings = Settings()
    assert settings.openlineage_url == "http://marquez:5000"
    assert settings.openlineage_endpoint == "api/v1/lineage"
    assert "hunter2" not in repr(settings)
    monkeypatch.setenv("FLYWHEEL_OPENLINEAGE_URL", "marquez:5000")
    with pytest.raises(ValidationError, match="FLYWHEEL_OPENLINEAGE_URL must be an http"):
        Settings()
