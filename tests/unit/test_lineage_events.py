"""OpenLineage events: every stage's events are valid OpenLineage (against JSON Schemas
written from the 2.0 specification in tests/openlineage_support.py), dataset names chain from
round to round, a FAIL carries the error, and a dead receiver costs the caller nothing but
one warning."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from openlineage.client.serde import Serde

from dataflywheel.config import Settings
from dataflywheel.lineage_events import names
from dataflywheel.lineage_events.emitter import Emitter, http_emitter
from dataflywheel.lineage_events.events import RunState, round_event, run_event, stage_event
from dataflywheel.lineage_events.facts import (
    CheckpointFact,
    DatasetFact,
    EvaluationFact,
    PromptSetFact,
    RunIdentity,
    SamplesFact,
    ScoresFact,
    StageFacts,
    VerifierTally,
)
from tests.openlineage_support import FACETS, RUN_EVENT, Receiver, assert_valid, validate

NS = "dataflywheel"
RUN = RunIdentity(
    run_id=7, name="tiny", spec_hash="ab" * 32, created_at=datetime(2025, 1, 2, tzinfo=UTC)
)
STAGE_RUN = "0190b1c2-0000-7000-8000-000000000001"


def checkpoint(index: int | None, peer: int = 0, status: str = "promoted") -> CheckpointFact:
    return CheckpointFact(
        checkpoint_id=100 + (index or 0) * 10 + peer,
        run_id=7,
        round_index=index,
        peer=peer,
        status=status,
        digest=f"{index}{peer}".ljust(64, "c"),
        object_key=f"sha256/{index}{peer}",
        source_uri="builtin:tiny-llama" if index is None else None,
    )


def dataset(index: int, share: float | None = None) -> DatasetFact:
    return DatasetFact(
        7, index, "train", "sft", "majority_vote", "d" * 64, "sha256/d", 30, {"yield": 0.8}, share
    )


def round_facts(index: int) -> dict[str, StageFacts]:
    """Every stage of round ``index`` (>= 1), as stage_facts reads them after a run."""
    prompts = PromptSetFact("addition", "train", 12)
    held_out = PromptSetFact("addition", "eval", 10)
    samples = SamplesFact(7, index, "train", samples=36, prompts=12)
    scores = ScoresFact(
        7,
        index,
        "train",
        (
            VerifierTally("exact_answer", "v1", 36, 20, 1),
            VerifierTally("majority_vote", "v2", 36, 30, 0),
        ),
    )
    evaluation = EvaluationFact(
        7, index, "heldout", "accuracy", 0.4, {"accuracy": 0.4, "prompts": 10}
    )
    return {
        "generate": StageFacts(
            inputs=(prompts, checkpoint(index - 1), checkpoint(index - 1, peer=1)),
            outputs=(samples,),
        ),
        "verify": StageFacts(inputs=(samples,), outputs=(scores,)),
        "select": StageFacts(inputs=(samples, scores), outputs=(dataset(index),)),
        "train": StageFacts(
            inputs=(dataset(index, 0.5), dataset(index - 1, 0.25), checkpoint(index - 1)),
            outputs=(
                checkpoint(index, status="candidate"),
                checkpoint(index, peer=1, status="candidate"),
            ),
        ),
        "evaluate": StageFacts(
            inputs=(held_out, checkpoint(index, status="candidate")),
            outputs=(SamplesFact(7, index, "eval", 10, 10), evaluation),
        ),
        "evaluate_baseline": StageFacts(
            inputs=(held_out, checkpoint(None, status="base")),
            outputs=(EvaluationFact(7, None, "heldout", "accuracy", 0.1, {"prompts": 10}),),
        ),
        "promote": StageFacts(
            inputs=(checkpoint(index, status="promoted"), evaluation),
            promotion={"decision": "promoted", "candidate": 0.4, "incumbent": 0.1, "max_drop": 1.0},
        ),
    }


@pytest.mark.parametrize("stage", sorted(names.STAGES))
def test_every_stage_event_is_valid_openlineage(stage: str) -> None:
    facts = round_facts(2)[stage]
    for state in (RunState.START, RunState.COMPLETE):
        doc = assert_valid(
            stage_event(
                state,
                NS,
                RUN,
                2,
                stage,
                STAGE_RUN,
                facts=facts if state is RunState.COMPLETE else None,
            )
        )
        assert doc["eventType"] == state.value
        assert doc["job"] == doc["job"] | {"namespace": NS, "name": f"run-7.round-2.{stage}"}
        assert doc["run"]["facets"]["dataflywheel"]["specHash"] == RUN.spec_hash
        assert doc["run"]["facets"]["dataflywheel"]["stage"] == stage
    # The stage's run hangs below its round's run, below the flywheel run.
    parent = doc["run"]["facets"]["parent"]
    run_uuid = names.run_uuid(NS, 7, RUN.created_at)
    assert (parent["job"]["namespace"], parent["job"]["name"]) == (NS, "run-7.round-2")
    assert parent["run"]["runId"] == names.round_uuid(run_uuid, 2)
    assert parent["root"]["run"]["runId"] == run_uuid
    assert [d["name"] for d in doc["inputs"]] == [_name(f) for f in facts.inputs]
    assert [d["name"] for d in doc["outputs"]] == [_name(f) for f in facts.outputs]


def test_the_schema_check_has_teeth() -> None:
    from jsonschema import ValidationError

    good = json.loads(Serde.to_json(run_event(RunState.START, NS, RUN)))
    validate(good, RUN_EVENT)
    for broken in (
        {**good, "run": {"runId": "run-7"}},  # not a UUID
        {k: v for k, v in good.items() if k != "eventTime"},
        {**good, "job": {"namespace": NS}},  # a job without a name
    ):
        with pytest.raises(ValidationError):
            validate(broken, RUN_EVENT)
    facet = good["run"]["facets"]["processing_engine"]
    with pytest.raises(ValidationError):
        validate(
            {k: v for k, v in facet.items() if k != "version"}, FACETS["ProcessingEngineRunFacet"]
        )


def _name(fact: Any) -> str:
    from dataflywheel.lineage_events.events import _describe

    return _describe(fact)[0]


def test_run_and_round_events_are_valid_and_linked() -> None:
    for state in (RunState.START, RunState.COMPLETE):
        run = assert_valid(run_event(state, NS, RUN))
        rnd = assert_valid(round_event(state, NS, RUN, 3))
        assert run["job"]["name"] == "run-7" and rnd["job"]["name"] == "run-7.round-3"
        assert rnd["run"]["facets"]["parent"]["run"]["runId"] == run["run"]["runId"]
        assert rnd["run"]["facets"]["parent"]["job"]["name"] == "run-7"
        assert rnd["run"]["facets"]["parent"]["root"]["run"]["runId"] == run["run"]["runId"]
    # Derived ids: a resumed run (another process) reports under the same ids.
    assert run_event(RunState.START, NS, RUN).run.runId == run["run"]["runId"]
    other = RunIdentity(7, "tiny", RUN.spec_hash, datetime(2025, 1, 3, tzinfo=UTC))
    assert run_event(RunState.START, NS, other).run.runId != run["run"]["runId"]


def test_the_facets_carry_digests_counts_and_verifiers() -> None:
    facts = round_facts(2)
    train = assert_valid(
        stage_event(RunState.COMPLETE, NS, RUN, 2, "train", STAGE_RUN, facts=facts["train"])
    )
    mix, replayed, parent = train["inputs"]
    assert mix["name"] == "run-7/round-2/dataset/train"
    assert mix["facets"]["version"]["datasetVersion"] == "d" * 64
    assert mix["inputFacets"]["dataflywheel_trainingMix"]["share"] == 0.5
    assert replayed["name"] == "run-7/round-1/dataset/train"
    trained = train["outputs"][0]
    assert trained["facets"]["version"]["datasetVersion"] == checkpoint(2).digest
    assert trained["facets"]["dataflywheel_checkpoint"]["status"] == "candidate"
    assert train["outputs"][1]["name"] == "run-7/round-2/checkpoint/peer-1"

    verify = assert_valid(
        stage_event(RunState.COMPLETE, NS, RUN, 2, "verify", STAGE_RUN, facts=facts["verify"])
    )
    (scores,) = verify["outputs"]
    assert scores["outputFacets"]["outputStatistics"]["rowCount"] == 72
    assert [
        (v["name"], v["version"]) for v in scores["facets"]["dataflywheel_verifiers"]["verifiers"]
    ] == [
        ("exact_answer", "v1"),
        ("majority_vote", "v2"),
    ]
    select = assert_valid(
        stage_event(RunState.COMPLETE, NS, RUN, 2, "select", STAGE_RUN, facts=facts["select"])
    )
    assert select["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 30
    assert [f["name"] for f in select["outputs"][0]["facets"]["schema"]["fields"]] == [
        "prompt",
        "completion",
    ]
    promote = assert_valid(
        stage_event(RunState.COMPLETE, NS, RUN, 2, "promote", STAGE_RUN, facts=facts["promote"])
    )
    assert promote["run"]["facets"]["dataflywheel_promotion"]["decision"] == "promoted"


def test_dataset_names_chain_from_round_to_round() -> None:
    """Round K's trained checkpoint is the very dataset round K+1 generates with; the prompt
    set is one dataset for every round; names never depend on when they are built."""
    for k in (1, 2, 5):
        trained = assert_valid(
            stage_event(
                RunState.COMPLETE, NS, RUN, k, "train", STAGE_RUN, facts=round_facts(k)["train"]
            )
        )
        nxt = assert_valid(
            stage_event(
                RunState.COMPLETE,
                NS,
                RUN,
                k + 1,
                "generate",
                STAGE_RUN,
                facts=round_facts(k + 1)["generate"],
            )
        )
        outputs = {(d["namespace"], d["name"]) for d in trained["outputs"]}
        inputs = {(d["namespace"], d["name"]) for d in nxt["inputs"]}
        assert {
            (NS, f"run-7/round-{k}/checkpoint"),
            (NS, f"run-7/round-{k}/checkpoint/peer-1"),
        } <= outputs & inputs
        assert (NS, "prompts/addition/train") in inputs
        # The samples a round generates are what it verifies and selects from.
        facts = round_facts(k + 1)
        assert _names(facts, "generate", "outputs") == _names(facts, "verify", "inputs")
        assert _names(facts, "verify", "outputs")[0] in _names(facts, "select", "inputs")
        assert _names(facts, "select", "outputs")[0] == _names(facts, "train", "inputs")[0]
    assert names.samples_dataset(7, 2, "train") == "run-7/round-2/samples/train"
    assert names.scores_dataset(7, 2, "eval") == "run-7/round-2/scores/eval"
    assert names.checkpoint_dataset(7, None) == "run-7/base/checkpoint"
    with pytest.raises(ValueError, match="unknown stage"):
        names.stage_job(7, 1, "gather")


def _names(facts: dict[str, StageFacts], stage: str, side: str) -> list[str]:
    return [_name(f) for f in getattr(facts[stage], side)]


def test_a_fail_event_carries_the_error() -> None:
    try:
        raise RuntimeError("trainer ran out of memory")
    except RuntimeError as exc:
        doc = assert_valid(stage_event(RunState.FAIL, NS, RUN, 2, "train", STAGE_RUN, error=exc))
    error = doc["run"]["facets"]["errorMessage"]
    assert doc["eventType"] == "FAIL"
    assert error["message"] == "RuntimeError: trainer ran out of memory"
    assert error["programmingLanguage"] == "python"
    assert "raise RuntimeError" in error["stackTrace"]
    with pytest.raises(ValueError, match="FAIL event only"):
        stage_event(RunState.COMPLETE, NS, RUN, 2, "train", STAGE_RUN, error=RuntimeError("x"))


# --- the emitter --------------------------------------------------------------------------


def _settings(url: str) -> Settings:
    return Settings(openlineage_url=url, openlineage_api_key="s3cret")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def closed_port() -> str:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: connections are refused
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("receiver", ["silent_server", "closed_port"])
def test_a_dead_receiver_costs_the_caller_nothing_but_one_warning(
    receiver: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    url = request.getfixturevalue(receiver)
    event = stage_event(
        RunState.COMPLETE, NS, RUN, 2, "train", STAGE_RUN, facts=round_facts(2)["train"]
    )
    emitter = http_emitter(_settings(url))
    with caplog.at_level(logging.WARNING, logger="dataflywheel.lineage_events.emitter"):
        started = time.perf_counter()
        for _ in range(1500):  # more than the queue holds: the rest are dropped, not waited for
            emitter.emit(event)
        flushed = emitter.flush(0.2)
        took = time.perf_counter() - started
    assert took < 1.0, f"the caller waited {took:.2f}s"
    # The queue took 1000 and the thread one more; the rest were dropped at once.
    assert not flushed and emitter.sent == 0 and emitter.dropped >= 1500 - 1001
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "OpenLineage event dropped" in warnings[0].getMessage()


def test_a_live_receiver_gets_every_event_with_the_key() -> None:
    event = stage_event(RunState.START, NS, RUN, 2, "select", STAGE_RUN)
    with Receiver() as receiver:
        emitter = http_emitter(_settings(receiver.url))
        for _ in range(20):
            emitter.emit(event)
        assert emitter.flush(5)
    assert len(receiver.events) == 20 and emitter.sent == 20 and emitter.dropped == 0
    assert set(receiver.paths) == {"/api/v1/lineage"}
    assert receiver.headers[0]["Authorization"] == "Bearer s3cret"
    assert receiver.events[0]["job"]["name"] == "run-7.round-2.select"


def test_an_emitter_survives_a_send_that_raises() -> None:
    sent: list[Any] = []

    def send(event: Any) -> None:
        if event == "bad":
            raise ValueError("unserialisable")
        sent.append(event)

    emitter = Emitter(send, capacity=10)
    for event in ("a", "bad", "b"):
        emitter.emit(event)
    assert emitter.flush(2)
    assert sent == ["a", "b"] and emitter.dropped == 1
