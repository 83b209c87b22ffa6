"""Bearer API keys: every route but the public ones answers 401 (JSON) to no key, a wrong key
and a revoked key. Routes are enumerated from ``app.routes``, so a new endpoint is covered
without editing this test. Keys are managed with the real ``flywheel api-key`` command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from api_support import make_app, new_key
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from dataflywheel.db import api_queries
from dataflywheel.db.session import session_scope

# Served without a key: liveness, the OpenAPI document and its viewers, and the sample
# browser's static page and script (they hold no data; the page asks for a key).
PUBLIC = {
    "/health",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/ui",
    "/ui/browser.js",
}
EXAMPLE_PARAMS = {"key": "sha256/ab/" + "ab" * 32}


def _protected(app: FastAPI) -> list[tuple[str, str]]:
    calls = []
    for route in app.routes:
        path = getattr(route, "path", "")
        if path in PUBLIC:
            continue
        assert isinstance(route, APIRoute), f"unexpected non-API route {path}: list it in PUBLIC?"
        url = re.sub(
            r"\{(\w+)(?::path)?\}", lambda m: EXAMPLE_PARAMS.get(m.group(1), "1"), route.path
        )
        calls += [(method, url) for method in sorted(route.methods - {"HEAD", "OPTIONS"})]
    return calls


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> FastAPI:
    return make_app(db_url, tmp_path)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def test_route_enumeration_finds_the_api_and_the_public_routes(app: FastAPI) -> None:
    paths = {getattr(r, "path", "") for r in app.routes}
    assert paths >= PUBLIC
    protected = _protected(app)
    # Sanity: the enumeration found the API, so an empty list cannot pass vacuously.
    assert ("POST", "/runs") in protected and ("GET", "/samples") in protected
    assert len(protected) >= 12


def _assert_401(response, what: str) -> None:
    assert response.status_code == 401, f"{what}: {response.status_code} {response.text}"
    body = response.json()
    assert body["error"] == "unauthorized" and body["message"], body
    assert response.headers["www-authenticate"] == "Bearer"


def test_no_key_wrong_key_and_revoked_key_are_401_everywhere(
    app: FastAPI, client: TestClient, engine: sa.Engine
) -> None:
    token = new_key(engine, "soon-revoked")
    with session_scope(engine) as session:
        api_queries.revoke_api_key(session, token[: api_queries.DISPLAY_CHARS])
    cases = {
        "no key": {},
        "not bearer": {"Authorization": f"Basic {token}"},
        "wrong key": {"Authorization": "Bearer fw_" + "x" * 43},
        "revoked key": {"Authorization": f"Bearer {token}"},
    }
    for method, url in _protected(app):
        for what, headers in cases.items():
            _assert_401(client.request(method, url, headers=headers), f"{what} {method} {url}")


def test_a_valid_key_gets_through_and_is_marked_used(
    app: FastAPI, client: TestClient, engine: sa.Engine
) -> None:
    token = new_key(engine)
    headers = {"Authorization": f"Bearer {token}"}
    for method, url in _protected(app):
        response = client.request(method, url, headers=headers)
        assert response.status_code != 401, f"{method} {url}: {response.text}"
    assert client.get("/health").status_code == 200  # no key needed
    with engine.connect() as conn:
        used = conn.execute(sa.text("SELECT last_used_at FROM api_keys")).scalar_one()
    assert used is not None


def test_only_the_hash_is_stored(engine: sa.Engine) -> None:
    token = new_key(engine, "ci")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, prefix, token_hash FROM api_keys")).all()
    assert rows == [("ci", token[:10], api_queries.hash_token(token))]
    assert token not in str(rows)


def _flywheel(*args: str, db_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_DATABASE_URL=db_url, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "dataflywheel.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_api_key_cli_create_list_revoke(db_url: str, app: FastAPI, client: TestClient) -> None:
    created = _flywheel("api-key", "create", "ci-bot", db_url=db_url)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("fw_") and len(token) > 40
    assert "shown only this once" in created.stderr
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/runs", headers=headers).status_code == 200

    listed = _flywheel("api-key", "list", db_url=db_url)
    assert listed.returncode == 0 and "ci-bot" in listed.stdout and token[:10] in listed.stdout
    assert token not in listed.stdout

    revoked = _flywheel("api-key", "revoke", token[:10], db_url=db_url)
    assert revoked.returncode == 0, revoked.stderr
    _assert_401(client.get("/runs", headers=headers), "after revoke")

    unknown = _flywheel("api-key", "revoke", "fw_nothere", db_url=db_url)
    assert unknown.returncode == 1 and "no API key" in unknown.stderr
