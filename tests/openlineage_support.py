"""OpenLineage test harness: a receiver, and a check of events against the spec's rules.

Runs in: the test process. ``Receiver`` is a threaded HTTP server on 127.0.0.1 (a free port)
that answers every POST with 201, as Marquez does, and keeps the JSON bodies in arrival
order. ``assert_valid`` checks an event against JSON Schemas written here from the
OpenLineage 2.0 specification (https://openlineage.io/spec/2-0-2/OpenLineage.json and its
standard facets): the run event's required fields and formats, and each standard facet
our events carry. They are ours and state what a receiver such as Marquez relies on; the
``openlineage-python`` wheel ships the classes generated from the spec, not the schemas.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jsonschema import Draft202012Validator
from openlineage.client.serde import Serde

from dataflywheel.lineage_events.facets import PRODUCER

_URI = {"type": "string", "format": "uri"}
_NAMED = {
    "type": "object",
    "required": ["namespace", "name"],
    "properties": {"namespace": {"type": "string"}, "name": {"type": "string"}},
}
_FACET = {
    "type": "object",
    "required": ["_producer", "_schemaURL"],
    "properties": {"_producer": _URI, "_schemaURL": _URI},
}
_FACETS = {"type": "object", "additionalProperties": _FACET}
_DATASET = {
    **_NAMED,
    "properties": {
        **_NAMED["properties"],
        "facets": _FACETS,
        "inputFacets": _FACETS,
        "outputFacets": _FACETS,
    },
}
RUN_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["eventTime", "producer", "schemaURL", "run", "job"],
    "properties": {
        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
        "eventTime": {"type": "string", "format": "date-time"},
        "producer": _URI,
        "schemaURL": _URI,
        "run": {
            "type": "object",
            "required": ["runId"],
            "properties": {"runId": {"type": "string", "format": "uuid"}, "facets": _FACETS},
        },
        "job": {**_NAMED, "properties": {**_NAMED["properties"], "facets": _FACETS}},
        "inputs": {"type": "array", "items": _DATASET},
        "outputs": {"type": "array", "items": _DATASET},
    },
}


def _facet(required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        **_FACET,
        "required": [*_FACET["required"], *required],
        "properties": {**_FACET["properties"], **properties},
    }


_INT = {"type": "integer", "minimum": 0}
# The standard facets our events carry, by the name in their _schemaURL.
FACETS: dict[str, dict[str, Any]] = {
    "ParentRunFacet": _facet(
        ["run", "job"],
        run={
            "type": "object",
            "required": ["runId"],
            "properties": {"runId": {"type": "string", "format": "uuid"}},
        },
        job=_NAMED,
    ),
    "ErrorMessageRunFacet": _facet(
        ["message", "programmingLanguage"],
        message={"type": "string"},
        programmingLanguage={"type": "string"},
        stackTrace={"type": "string"},
    ),
    "DocumentationJobFacet": _facet(["description"], description={"type": "string"}),
    "JobTypeJobFacet": _facet(
        ["processingType", "integration"],
        processingType={"enum": ["BATCH", "STREAMING"]},
        integration={"type": "string"},
        jobType={"type": "string"},
    ),
    "DatasetVersionDatasetFacet": _facet(["datasetVersion"], datasetVersion={"type": "string"}),
    "OutputStatisticsOutputDatasetFacet": _facet([], rowCount=_INT, size=_INT, fileCount=_INT),
    "InputStatisticsInputDatasetFacet": _facet([], rowCount=_INT, size=_INT, fileCount=_INT),
    "SchemaDatasetFacet": _facet(
        ["fields"],
        fields={
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
            },
        },
    ),
    "ProcessingEngineRunFacet": _facet(["version"], version={"type": "string"}),
    "TagsRunFacet": _facet(["tags"], tags={"type": "array"}),
    "TagsJobFacet": _facet(["tags"], tags={"type": "array"}),
}
STANDARD = "https://openlineage.io/spec/facets/"


def validate(document: Any, schema: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` matches ``schema``."""
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(
        document
    )


def _facets(event: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    holders = [event["run"].get("facets", {}), event["job"].get("facets", {})]
    for dataset in event.get("inputs", []) + event.get("outputs", []):
        holders += [dataset.get(k, {}) for k in ("facets", "inputFacets", "outputFacets")]
    for holder in holders:
        yield from holder.items()


def assert_valid(event: Any) -> dict[str, Any]:
    """The event (a client object, or JSON as received) as JSON, after checking it against
    the run event's schema and every standard facet against its own (a standard facet
    without a schema here fails); custom facets must carry the producer's prefix and schema
    URL. Facets are ours except the ``tags`` the client adds on sending."""
    document = event if isinstance(event, dict) else json.loads(Serde.to_json(event))
    validate(document, RUN_EVENT)
    assert document["producer"] == PRODUCER
    for key, facet in _facets(document):
        assert facet["_producer"] == PRODUCER or key == "tags", key
        url = facet["_schemaURL"]
        if url.startswith(STANDARD):
            name = url.rsplit("/", 1)[-1].split(".json")[0]
            assert name in FACETS, f"no schema here for the standard facet {url}"
            validate(facet, FACETS[name])
        else:
            assert key.startswith("dataflywheel") and url.startswith(f"{PRODUCER}#/$defs/"), key
    return document


class Receiver:
    """``with Receiver() as r:`` serves at ``r.url`` until the block ends."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with received._lock:
                    received.paths.append(self.path)
                    received.headers.append(dict(self.headers))
                    received.events.append(json.loads(body))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep the test output quiet
                pass

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def wait_for(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 10) -> None:
        """Wait until ``done(events)`` holds; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if done(list(self.events)):
                    return
            time.sleep(0.02)
        raise AssertionError(
            f"receiver: condition not met within {timeout}s; {len(self.events)} events"
        )

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
