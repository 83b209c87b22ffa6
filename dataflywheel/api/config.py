"""The API service's own settings (``FLYWHEEL_API_*``); where the database, store and Prefect
live comes from :class:`dataflywheel.config.Settings`.

Runs in: the API process, read once in :func:`dataflywheel.api.create_app`'s caller.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from dataflywheel.deploy import DEFAULT_DEPLOYMENT, FLOW_NAME


class ApiConfig(BaseSettings):
    """How the HTTP API starts runs and hands out downloads."""

    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_API_", env_file=".env", extra="ignore", frozen=True
    )

    deployment: str = Field(
        default=f"{FLOW_NAME}/{DEFAULT_DEPLOYMENT}",
        pattern=r"^[^/]+/[^/]+$",
        description="The Prefect deployment POST /runs starts, as 'flow name/deployment name' "
        "(created by `flywheel deploy`).",
    )
    prefect_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of each call to the Prefect API, in seconds."
    )
    presign_expiry_s: int = Field(
        default=3600, ge=60, le=7 * 24 * 3600, description="Lifetime of presigned S3 URLs."
    )
    max_page_size: int = Field(
        default=500, ge=1, description="Largest page a list endpoint returns."
    )
