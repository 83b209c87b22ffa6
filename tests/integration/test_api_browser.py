"""The sample browser (/ui) in headless Chromium (Debian's `chromium`) against the real API
served by uvicorn on this test's database: the page loads, the filters narrow the table, a
prompt's samples show round by round, and the lineage view renders the checkpoint chain.

The DOM is read after the page's scripts ran (`--dump-dom` with a virtual time budget); the
key is handed over in the URL fragment, which the page moves to localStorage.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
import uvicorn
from api_support import make_app, new_key, seed_run

from dataflywheel.store import LocalStore

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Elements(HTMLParser):
    """Every element's tag, attributes and text, flat, for simple assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None], list[str]]] = []
        self._open: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        text: list[str] = []
        self.found.append((tag, dict(attrs), text))
        if tag not in ("br", "input", "meta", "link", "img"):
            self._open.append(text)

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for text in self._open:
            text.append(data)

    def with_attr(self, name: str) -> list[tuple[dict[str, str | None], str]]:
        return [(a, "".join(t)) for _, a, t in self.found if name in a]


@pytest.fixture
def served(engine: sa.Engine, db_url: str, tmp_path: Path) -> Iterator[tuple[str, str, dict]]:
    app = make_app(db_url, tmp_path)
    ids = seed_run(engine, LocalStore(tmp_path / "objects"), tmp_path)
    token = new_key(engine, "browser")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", token, ids
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _chromium(url: str, profile: Path, *extra: str) -> str:
    assert CHROMIUM, "Debian's chromium is needed: apt-get install -y chromium (see README)"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", "--virtual-time-budget=15000", *extra, url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _page(base: str, token: str, profile: Path, **query: object) -> Elements:
    url = f"{base}/ui?{urlencode(query)}#key={token}"
    parsed = Elements()
    parsed.feed(_chromium(url, profile, "--dump-dom"))
    ready = [a for a, _ in parsed.with_attr("data-ready")]
    status = [t for a, t in parsed.with_attr("id") if a["id"] == "status"]
    assert ready, f"the page did not finish loading; status: {status}"
    return parsed


def _rows(page: Elements) -> dict[int, str]:
    return {int(a["data-sample-id"] or 0): text for a, text in page.with_attr("data-sample-id")}


def test_filters_narrow_the_table(served: tuple[str, str, dict], tmp_path: Path) -> None:
    base, token, ids = served
    profile = tmp_path / "profile"
    everything = _rows(_page(base, token, profile, run=ids["run"]))
    assert len(everything) == 4
    failed = _rows(
        _page(base, token, profile, run=ids["run"], verifier="exact_answer", passed="false")
    )
    assert len(failed) == 1 and "wrong 13" in next(iter(failed.values()))
    by_text = _rows(_page(base, token, profile, q="3 + 3"))
    assert len(by_text) == 2
    assert _rows(_page(base, token, profile, round=0)) == {}


def test_prompt_side_by_side_and_lineage_render(
    served: tuple[str, str, dict], tmp_path: Path
) -> None:
    base, token, ids = served
    page = _page(
        base, token, tmp_path / "profile", run=ids["run"], compare=ids["prompts"][1],
        lineage=ids["c1"],
    )  # fmt: skip
    cards = page.with_attr("data-round")
    assert [a["data-round"] for a, _ in cards] == ["1"]
    assert "6" in cards[0][1] and "wrong 13" in cards[0][1]
    chain = [int(a["data-checkpoint-id"] or 0) for a, _ in page.with_attr("data-checkpoint-id")]
    assert chain == [ids["c1"], ids["c0"], ids["base"]]
    texts = " ".join(t for _, _, t0 in page.found for t in t0)
    assert f"3 sample(s) from run {ids['run']} round 1, generated by #{ids['c0']}" in texts


def test_screenshot(served: tuple[str, str, dict], tmp_path: Path) -> None:
    base, token, ids = served
    shot = tmp_path / "sample-browser.png"
    query = urlencode({"run": ids["run"], "compare": ids["prompts"][1], "lineage": ids["c1"]})
    _chromium(
        f"{base}/ui?{query}#key={token}", tmp_path / "profile",
        f"--screenshot={shot}", "--window-size=1400,820", "--hide-scrollbars",
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    # FLYWHEEL_UPDATE_DOCS_SCREENSHOT=1 refreshes the picture in docs/api.md.
    if os.environ.get("FLYWHEEL_UPDATE_DOCS_SCREENSHOT"):
        (ROOT / "docs" / "img").mkdir(exist_ok=True)
        shutil.copy(shot, ROOT / "docs" / "img" / "sample-browser.png")
