"""Environment settings: where the database, object store, Ray and Prefect live.

Runs in: anywhere. Each process reads its settings where it starts work — ``Settings()`` in
a CLI command, the API's app factory, the Prefect tasks' context (once per process), a Ray
worker — and passes them down; never at import time. Every field can be set as an
environment variable with the ``FLYWHEEL_`` prefix, e.g. ``FLYWHEEL_DATABASE_URL``, or in a
``.env`` file in the working directory.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the service's state lives. Run parameters belong in the run spec, not here."""

    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_", env_file=".env", extra="ignore", frozen=True
    )

    data_dir: Path = Field(
        default=Path(".flywheel"),
        description="Directory for local state: the embedded Postgres cluster, the local "
        "object store and logs.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy/libpq URL of the Postgres server, e.g. "
        "postgresql+psycopg://user:pass@host:5432/flywheel. Unset: an embedded PostgreSQL "
        "is started in <data_dir>/postgres.",
    )
    store_uri: str | None = Field(
        default=None,
        description="Object store root: a local directory path or s3://bucket/prefix. "
        "Unset: <data_dir>/objects.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Custom S3 endpoint, e.g. http://localhost:9000 for MinIO."
    )
    s3_region: str | None = Field(default=None, description="S3 region, e.g. us-east-1.")
    s3_access_key_id: str | None = Field(
        default=None, description="S3 access key id (unset: boto3's default credential chain)."
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="S3 secret access key (unset: boto3's default chain)."
    )
    ray_address: str | None = Field(
        default=None,
        description="Address of an existing Ray cluster (ray://host:10001 or host:6379). "
        "Unset: a local Ray is started in-process.",
    )
    ray_num_gpus: int | None = Field(
        default=None,
        ge=0,
        description="GPUs the local Ray declares (unset: the GPUs Ray detects). Declaring "
        "GPUs on a machine without them schedules by them while the models run on CPU: a "
        "dry run of a GPU spec's placement. Ignored with ray_address.",
    )
    database_reconnect_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds a task waits for the database to answer again (a restart, a "
        "failover) before it fails.",
    )
    generation_stall_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a generator actor may go without producing a token while it "
        "generates; after that it counts as hung: it is killed, a fresh one loads the model, "
        "and its shards are retried. Raise it for models whose single decoding step can take "
        "minutes.",
    )
    generation_probe_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a generator actor has to answer a health probe, and a fresh one "
        "to finish a 1-token generation before it gets shards.",
    )
    model_cache_gib: float = Field(
        default=50.0,
        ge=0,
        description="GiB of model trees each node keeps in <data_dir>/model-cache. After "
        "each fetch, models no live process is using are deleted, least recently used "
        "first, until the cache fits; models in use are kept even beyond it. Read by the "
        "workers on each node.",
    )
    prefect_api_url: str | None = Field(
        default=None,
        description="Prefect API URL, e.g. http://127.0.0.1:4200/api. Unset: a local "
        "Prefect server is started when a flow runs.",
    )
    openlineage_url: str | None = Field(
        default=None,
        description="Base URL of an OpenLineage receiver, e.g. http://localhost:5000 for "
        "Marquez. Set: every stage of a round sends START / COMPLETE / FAIL run events "
        "there from the flow process (docs/openlineage.md). Unset: no events.",
    )
    openlineage_endpoint: str = Field(
        default="api/v1/lineage",
        description="Path of the receiver's lineage endpoint, joined to openlineage_url.",
    )
    openlineage_namespace: str = Field(
        default="dataflywheel",
        description="OpenLineage namespace of the flywheel's jobs and datasets; give each "
        "database its own when several report to one receiver (run ids repeat).",
    )
    openlineage_api_key: SecretStr | None = Field(
        default=None, description="Bearer token for the OpenLineage receiver, if it wants one."
    )
    test_pause_at: str | None = Field(
        default=None,
        description="Test hook for crash tests, off in normal use: a fault point name such "
        "as 'train@1' (dataflywheel/faults.py). The flow process pauses there once, so a "
        "test can kill it at a place the work has provably reached and not passed.",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql", "postgres://")):
            raise ValueError(
                "FLYWHEEL_DATABASE_URL must be a PostgreSQL URL "
                "(postgresql+psycopg://user:pass@host:5432/db); other databases are not supported"
            )
        return value

    @field_validator("openlineage_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                "FLYWHEEL_OPENLINEAGE_URL must be an http(s) URL of an OpenLineage receiver "
                "(e.g. http://localhost:5000 for Marquez); unset it to send no events"
            )
        return value

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def embedded_pgdata(self) -> Path:
        return self.resolved_data_dir / "postgres"

    @property
    def resolved_store_uri(self) -> str:
        if self.store_uri:
            return self.store_uri
        return str(self.resolved_data_dir / "objects")
