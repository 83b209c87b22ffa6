"""The HTTP service (FastAPI): trigger runs as Prefect deployment runs, read runs, rounds,
samples and lineage, hand out download links; bearer API keys stored hashed.

Runs in: the API process (``flywheel api``). ``docs/api.md`` describes every endpoint.
"""

from dataflywheel.api.app import create_app

__all__ = ["create_app"]
