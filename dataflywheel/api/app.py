"""The application factory: ``create_app(settings)`` wires the routers, the JSON error
handlers and the per-process handles (database engine, object store, Prefect API URL).

Runs in: the API process (``flywheel api`` runs it under uvicorn). Nothing connects at
import or in the factory: the engine connects on first use, so ``/health`` answers even while
the database is down and ``/ready`` says why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache

from fastapi import FastAPI

from dataflywheel import __version__
from dataflywheel.api import errors
from dataflywheel.api.config import ApiConfig
from dataflywheel.api.routes import artifacts, exports, health, runs, samples, ui
from dataflywheel.config import Settings
from dataflywheel.db.session import make_engine, resolve_database_url
from dataflywheel.prefect_server import configured_api_url
from dataflywheel.store import store_from_settings

DESCRIPTION = """Trigger self-improvement runs and read their lineage.

Every endpoint but `/health` needs an API key (`flywheel api-key create NAME`) sent as
`Authorization: Bearer <key>`. Errors are JSON: `{"error": code, "message": text}`.
"""


def create_app(settings: Settings, config: ApiConfig | None = None) -> FastAPI:
    """The API for the database, store and Prefect server that ``settings`` name."""
    config = config or ApiConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.engine.dispose()

    app = FastAPI(
        title="dataflywheel", version=__version__, description=DESCRIPTION, lifespan=lifespan
    )
    app.state.settings = settings
    app.state.config = config
    app.state.engine = make_engine(resolve_database_url(settings))
    app.state.prefect_api_url = configured_api_url(settings)
    app.state.store = lru_cache(maxsize=1)(lambda: store_from_settings(settings))
    errors.install(app)
    app.include_router(health.public)
    app.include_router(health.router)
    app.include_router(runs.router)
    app.include_router(samples.router)
    app.include_router(artifacts.router)
    app.include_router(exports.router)
    app.include_router(ui.router)

    return app


def app_from_environment() -> FastAPI:
    """The app for the ``FLYWHEEL_*`` environment (uvicorn's factory in ``flywheel api``)."""
    return create_app(Settings())
