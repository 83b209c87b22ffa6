"""``flywheel rescore``: bad input is one clear error naming what to fix, exit 1, no row written
and nothing started; good input runs the ``rescore`` Prefect flow (the session's real Prefect
server, a local Ray, a real PostgreSQL, the CLI in-process), which scores only what is
missing. A rescore with a model scorer runs in tests/e2e/test_recipe_examples.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.db.ingest import PromptRow, SampleRow, insert_samples, upsert_prompts
from workers.driver import ray_session

SPEC = {
    "model": {"source": "smollm2"},
    "prompts": {"kind": "builtin", "family": "word_problems"},
    "verification": {"verifiers": [{"name": "exact_answer"}]},
}


@pytest.fixture
def run_id(db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", db_url)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLYWHEEL_STORE_URI", str(tmp_path / "objects"))
    with engine.begin() as conn:
        return conn.execute(
            sa.text("INSERT INTO runs (name, spec, spec_hash) VALUES ('x', :s, 'h') RETURNING id"),
            {"s": json.dumps(SPEC)},
        ).scalar_one()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["4242", "--verifier", "exact_answer"], "run 4242 does not exist"),
        (["{run}", "--verifier", "numeric"], "--verifier 'numeric': run's spec has verifiers"),
        (["{run}"], "name at least one verifier"),
        (["{run}", "-v", "exact_answer", "--purpose", "test"], "--purpose: ['test'] unknown"),
        (["{run}", "--config", "{bad}"], "model folder"),
        (["{run}", "--config", "{missing}"], "cannot read a verifier configuration"),
    ],
)
def test_bad_rescore_requests_are_one_clear_error(
    run_id: int, engine: Engine, tmp_path: Path, args: list[str], message: str
) -> None:
    bad = tmp_path / "rm.yaml"
    bad.write_text("name: reward_model\nmodel: no/such/folder\n")
    values = {"run": run_id, "bad": bad, "missing": tmp_path / "absent.yaml"}
    result = CliRunner().invoke(app, ["rescore", *(a.format(**values) for a in args)])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM scores")).scalar_one() == 0


# (prompt, reference, train completions, eval completion)
SAMPLES = [
    ("2+2=", "4", ["Answer: 4", "Answer: 5", "no idea"], "Answer: 4"),
    ("3+5=", "8", ["Answer: 8", "Answer: 9", "no idea"], "Answer: 7"),
]


def _scores(engine: Engine) -> dict[tuple[str, str], tuple[int, int]]:
    """(verifier, purpose) -> (rows, passed)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT x.verifier, s.purpose, count(*), count(*) FILTER (WHERE x.passed) "
                "FROM scores x JOIN samples s ON s.id = x.sample_id GROUP BY 1, 2"
            )
        ).all()
    return {(v, p): (n, k) for v, p, n, k in rows}


def test_rescore_runs_the_prefect_flow_and_scores_only_what_is_missing(
    run_id: int,
    engine: Engine,
    tmp_path: Path,
    prefect_api: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )

    from tasks import context

    # The session's Prefect server also holds other tests' "rescore run N" flow runs.
    since = datetime.now(UTC)
    with engine.begin() as conn:
        prompts = upsert_prompts(
            conn,
            [PromptRow(prompt_set="t", split="train", text=t, reference={"answer": a})
             for t, a, _, _ in SAMPLES],
        )  # fmt: skip
        rnd = conn.execute(
            sa.text("INSERT INTO rounds (run_id, index, seed) VALUES (:r, 1, 1) RETURNING id"),
            {"r": run_id},
        ).scalar_one()
        ckpt = conn.execute(
            sa.text("INSERT INTO checkpoints (run_id, status) VALUES (:r, 'base') RETURNING id"),
            {"r": run_id},
        ).scalar_one()
        ids = sorted(prompts.values())
        insert_samples(
            conn,
            [
                SampleRow(round_id=rnd, prompt_id=pid, checkpoint_id=ckpt, sample_index=k,
                          seed=k, text=text, sampling_params={}, purpose=purpose)
                for pid, (_, _, train, evaluated) in zip(ids, SAMPLES, strict=True)
                for purpose, texts in (("train", train), ("eval", [evaluated]))
                for k, text in enumerate(texts)
            ],
        )  # fmt: skip
    regex = tmp_path / "regex.yaml"
    regex.write_text("name: regex\npattern: '^Answer: \\d+$'\n")
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    monkeypatch.delenv("FLYWHEEL_PREFECT_API_URL", raising=False)
    monkeypatch.delenv("FLYWHEEL_RAY_ADDRESS", raising=False)
    args = ["rescore", str(run_id), "-v", "exact_answer", "--config", str(regex)]
    try:
        result = CliRunner().invoke(app, [*args, "--purpose", "train"])
        assert result.exit_code == 0, result.output
        assert _scores(engine) == {("exact_answer", "train"): (6, 2), ("regex", "train"): (6, 4)}
        # Again over every purpose: only the eval samples are new; the train ones are skipped.
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert _scores(engine) == {
            ("exact_answer", "train"): (6, 2),
            ("regex", "train"): (6, 4),
            ("exact_answer", "eval"): (2, 1),
            ("regex", "eval"): (2, 2),
        }
    finally:
        if ray.is_initialized():
            ray_session.shutdown()
        context.reset()

    with SyncPrefectClient(prefect_api) as client:
        flow_runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["rescore"])),
        )
        ours = [f for f in flow_runs if f.name == f"rescore run {run_id}" and f.created >= since]
        assert len(ours) == 2 and all(f.state and f.state.is_completed() for f in ours)
        assert sorted(f.parameters["purposes"] for f in ours) == [
            ["train"],
            ["train", "eval", "baseline"],
        ]
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[f.id for f in ours]))
        )
    names = sorted(t.name.rsplit("-", 1)[0] for t in tasks)
    assert names == ["rescore_samples"] * 4 + ["resolve_verifiers"] * 2
    assert all(t.state and t.state.name == "Completed" for t in tasks)  # ran, never "Cached"
