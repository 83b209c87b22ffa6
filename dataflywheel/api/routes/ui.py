"""The sample browser: one static HTML page (plain JS) that reads the JSON API.

Runs in: the API process. The page and its script hold no data, so they are served without a
key; the page asks for an API key and sends it with every JSON request it makes.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter(tags=["sample browser"], include_in_schema=False)


@router.get("/ui")
def browser() -> FileResponse:
    return FileResponse(STATIC / "browser.html", media_type="text/html")


@router.get("/ui/browser.js")
def script() -> FileResponse:
    return FileResponse(STATIC / "browser.js", media_type="text/javascript")
