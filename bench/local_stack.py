"""The embedded stack a benchmark runs a flow or its tasks against, in a temporary directory.

Runs in: the benchmark's own process (it becomes the flow process). ``local_stack`` points
the FLYWHEEL_* settings at a fresh data directory and object store, starts the embedded
PostgreSQL (migrated) and a local Prefect server, and on exit stops all of it and the local
Ray the run started, so a benchmark measures a run on the same parts a user's run has.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def local_stack() -> Iterator[Any]:
    """Yields a SQLAlchemy engine on the stack's database; Prefect's API is set for this
    process (``PREFECT_API_URL``) and tasks may run outside a flow."""
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    os.environ["FLYWHEEL_DATA_DIR"] = str(tmp / "data")
    os.environ["FLYWHEEL_STORE_URI"] = str(tmp / "objects")
    os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
    for var in ("FLYWHEEL_PREFECT_API_URL", "PREFECT_API_URL", "FLYWHEEL_RAY_ADDRESS"):
        os.environ.pop(var, None)

    from dataflywheel import prefect_server
    from dataflywheel.config import Settings
    from dataflywheel.db import embedded, migrate
    from dataflywheel.db.session import engine_from_settings

    settings = Settings()
    engine = engine_from_settings(settings)
    migrate.upgrade(engine)
    server = prefect_server.start(settings)
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield engine
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        prefect_server.stop(settings)
        engine.dispose()
        if not settings.database_url:
            embedded.stop(settings.embedded_pgdata)
