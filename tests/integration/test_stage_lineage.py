"""The flow-side OpenLineage hooks (tasks/lineage.py) against a real database and a local
receiver: a stage that raises reports FAIL with its error (and so does its round), a stage
that wrote nothing completes without datasets, and with no URL nothing is sent or read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from dataflywheel.db import queries
from dataflywheel.db.session import session_scope
from tasks import context, lineage
from tests.openlineage_support import Receiver, assert_valid


@pytest.fixture
def round_id(engine: Engine) -> int:
    with session_scope(engine) as session:
        run_id = queries.create_run(session, name="lineage", spec={}, spec_hash="f" * 64)
        return queries.ensure_round(session, run_id, 1, 1234)


@pytest.fixture
def receiver(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    with Receiver() as found:
        monkeypatch.setenv("FLYWHEEL_DATABASE_URL", db_url)
        monkeypatch.setenv("FLYWHEEL_OPENLINEAGE_URL", found.url)
        monkeypatch.setenv("FLYWHEEL_OPENLINEAGE_NAMESPACE", "test-ns")
        context.reset()
        try:
            yield found
        finally:
            context.reset()


def _states(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["job"]["name"].split(".", 1)[1], e["eventType"]) for e in events]


def test_a_stage_that_raises_reports_fail_with_its_error(receiver: Receiver, round_id: int) -> None:
    events = lineage.RoundEvents(round_id)
    with pytest.raises(RuntimeError, match="out of memory"), events.round():
        with events.stage("select"):
            pass  # nothing selected yet: COMPLETE without datasets
        with events.stage("train"):
            raise RuntimeError("trainer ran out of memory")
    assert lineage.flush(5)
    got = [assert_valid(e) for e in receiver.events]
    assert _states(got) == [
        ("round-1", "START"),
        ("round-1.select", "START"),
        ("round-1.select", "COMPLETE"),
        ("round-1.train", "START"),
        ("round-1.train", "FAIL"),
        ("round-1", "FAIL"),
    ]
    assert {e["job"]["namespace"] for e in got} == {"test-ns"}
    assert got[2]["inputs"] == [] and got[2]["outputs"] == []
    for fail in (got[4], got[5]):
        error = fail["run"]["facets"]["errorMessage"]
        assert error["message"] == "RuntimeError: trainer ran out of memory"
        assert "trainer ran out of memory" in error["stackTrace"]
    # START and FAIL are one run of the train job; each stage execution is a run of its own.
    assert got[3]["run"]["runId"] == got[4]["run"]["runId"] != got[1]["run"]["runId"]
    assert got[4]["run"]["facets"]["parent"]["run"]["runId"] == got[0]["run"]["runId"]


def test_without_a_url_nothing_is_sent_or_read(
    db_url: str, monkeypatch: pytest.MonkeyPatch, round_id: int
) -> None:
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", db_url)
    monkeypatch.delenv("FLYWHEEL_OPENLINEAGE_URL", raising=False)
    context.reset()
    try:
        assert lineage.emitter() is None
        events = lineage.RoundEvents(round_id)
        with events.round(), events.stage("select"):
            pass
        with lineage.run_events(1):
            pass
        assert not context.engine.cache_info().currsize  # no database read for lineage
    finally:
        context.reset()
