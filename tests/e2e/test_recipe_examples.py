"""Each recipe example (iterative DPO, self-rewarding, majority vote, rejection-sampling SFT,
best-of-N) runs one small round for real, with its data filters; then the rows it must leave behind,
the report's data-health numbers and, once, `rescore` without regeneration.

Runs in: the test process as the flow process (tiny models, local Ray, a real Prefect server
and PostgreSQL), like tests/e2e/test_tiny_run.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from dataflywheel.config import Settings
from dataflywheel.db.session import make_engine, session_scope
from dataflywheel.spec import RunSpec, load_spec

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _small(spec: RunSpec) -> RunSpec:
    """The example with one round of a few prompts and steps (validated again)."""
    assert spec.warmup is not None
    small = spec.model_copy(
        update={
            "rounds": 1,
            "prompts": spec.prompts.model_copy(update={"num_prompts": 8}),
            "warmup": spec.warmup.model_copy(update={"num_prompts": 48, "max_steps": 20}),
            "generation": spec.generation.model_copy(update={"batch_size": 64}),
            "training": spec.training.model_copy(
                update={"max_steps": 3, "batch_size": 8, "replay_share": 0.0}
            ),
            "evaluation": spec.evaluation.model_copy(update={"num_prompts": 6}),
        }
    )
    return RunSpec.model_validate(small.model_dump(mode="json"))


@pytest.mark.parametrize(
    "example", ["iterative-dpo", "self-rewarding", "majority-vote", "rejection-sft", "best-of-n"]
)
def test_recipe_example_runs_a_round(
    example: str, flywheel_env: Settings, db_url: str, tmp_path: Path
) -> None:
    spec = _small(load_spec(EXAMPLES / f"{example}.yaml"))
    from flows.flywheel_run import flywheel_run

    run_id = flywheel_run(spec)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        q = lambda sql, **kw: conn.execute(sa.text(sql), kw).all()  # noqa: E731
        assert q("SELECT status FROM runs WHERE id = :r", r=run_id) == [("succeeded",)]
        n = spec.generation.samples_per_prompt
        train = q(
            "SELECT s.id FROM samples s JOIN rounds r ON r.id = s.round_id "
            "WHERE r.run_id = :r AND r.index = 1 AND s.purpose = 'train'",
            r=run_id,
        )
        assert len(train) == 8 * n
        # One score per verifier per train sample, each citing its verifier and version.
        scores = q(
            "SELECT x.verifier, x.verifier_version, x.status, x.reason, x.details FROM scores x "
            "JOIN samples s ON s.id = x.sample_id JOIN rounds r ON r.id = s.round_id "
            "WHERE r.run_id = :r AND r.index = 1 AND s.purpose = 'train'",
            r=run_id,
        )
        assert len(scores) == len(train) * len(spec.verification.names)
        assert all(re.fullmatch(r"[0-9a-f]{64}", v) for _, v, *_ in scores)
        (kind, recipe, rows, stats, dataset_id) = q(
            "SELECT d.kind, d.recipe, d.row_count, d.stats, d.id FROM datasets d "
            "JOIN rounds r ON r.id = d.round_id WHERE r.run_id = :r AND r.index = 1",
            r=run_id,
        )[0]
        assert recipe == spec.selection.recipe
        # The filters' accounts chain: each one's input is the previous one's output.
        steps = stats["filters"]
        assert [s["filter"] for s in steps] == [f.kind for f in spec.selection.filters]
        chain = [stats["recipe_kept"]] + [s["out"] for s in steps]
        assert [s["in"] for s in steps] == chain[:-1] and chain[-1] == rows == stats["kept"]
        assert stats["diversity"]["rows"] == rows
        ckpt = q(
            "SELECT c.training_config FROM checkpoints c JOIN rounds r ON r.id = c.round_id "
            "WHERE r.run_id = :r AND r.index = 1",
            r=run_id,
        )
        if spec.training.method == "dpo":
            assert kind == "preference"
            assert (stats["pair_policy"], stats["margin"]) == (
                "best_vs_worst",
                spec.selection.margin,
            )
            pairs = q(
                "SELECT m.sample_id, m.rejected_sample_id FROM dataset_members m "
                "WHERE m.dataset_id = :d",
                d=dataset_id,
            )
            assert len(pairs) == rows and all(a != b for a, b in pairs)
        if example == "iterative-dpo":
            # Verifier-ranked pairs exist and DPO trained on them, end to end.
            assert rows > 0 and ckpt[0][0]["method"] == "dpo"
        if example == "self-rewarding":
            judged = [s for s in scores if s[0] == "llm_judge"]
            assert len(judged) == len(train)
            for _, _, status, reason, details in judged:
                assert "judgement" in details
                assert (status, reason) in {
                    ("scored", "judge_pass"),
                    ("scored", "judge_fail"),
                    ("unscorable", "judge_unparseable"),
                    ("unscorable", "judge_out_of_range"),
                }
            if rows:
                assert ckpt[0][0]["method"] == "dpo"
        if example == "rejection-sft":
            per_prompt = q(
                "SELECT m.prompt_id, count(*) FROM dataset_members m WHERE m.dataset_id = :d "
                "GROUP BY 1",
                d=dataset_id,
            )
            assert all(c <= spec.selection.max_per_prompt for _, c in per_prompt)
            assert q(
                "SELECT count(*) FROM dataset_members m WHERE m.dataset_id = :d AND NOT EXISTS "
                "(SELECT 1 FROM scores x WHERE x.sample_id = m.sample_id "
                "AND x.verifier = 'exact_answer' AND x.passed)",
                d=dataset_id,
            ) == [(0,)]
        if example == "best-of-n":
            # Each kept row is its prompt's best train sample by the mean of the two scores
            # (ties to the lowest index), at or above the floor; prompts without one are out.
            best = q(
                "WITH v AS (SELECT s.id, s.prompt_id, s.sample_index, avg(x.value) AS value "
                "FROM samples s JOIN rounds r ON r.id = s.round_id JOIN scores x "
                "ON x.sample_id = s.id WHERE r.run_id = :r AND r.index = 1 "
                "AND s.purpose = 'train' GROUP BY s.id), "
                "ranked AS (SELECT id, prompt_id, value, row_number() OVER (PARTITION BY "
                "prompt_id ORDER BY value DESC, sample_index) AS rank FROM v) "
                "SELECT id FROM ranked WHERE rank = 1 AND value >= :floor ORDER BY id",
                r=run_id,
                floor=spec.selection.min_score,
            )
            members = q(
                "SELECT sample_id FROM dataset_members WHERE dataset_id = :d ORDER BY sample_id",
                d=dataset_id,
            )
            assert stats["recipe_kept"] == len(best) > 0
            assert set(members) <= set(best) and len(members) == rows
            assert (stats["k"], stats["score_by"]) == (1, "mean_of_all")
        if example == "majority-vote":
            labels = q("SELECT label FROM dataset_members WHERE dataset_id = :d", d=dataset_id)
            assert all(re.fullmatch(r"\d+", label) for (label,) in labels)
    engine.dispose()

    from dataflywheel.reporting import markdown, report_json, run_report

    with session_scope(make_engine(db_url)) as session:
        report = run_report(session, run_id)
    round_one = report_json(report)["rounds"][-1]
    assert round_one["filters"] == steps and round_one["diversity"] == stats["diversity"]
    if steps:
        assert "## Data health" in markdown(report)

    if example == "self-rewarding":
        # The judge and exact_answer both scored every train sample: the report counts where
        # their verdicts agree (an unscorable judgement is counted apart), as SQL does here.
        (agreement,) = round_one["agreement"]
        assert (agreement["judge"], agreement["verifier"]) == ("llm_judge", "exact_answer")
        engine = make_engine(db_url)
        with engine.connect() as conn:
            expected = conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE j.passed = v.passed), "
                    "count(*) FILTER (WHERE j.passed IS NOT NULL AND v.passed IS NOT NULL), "
                    "count(*) FROM scores j JOIN scores v ON v.sample_id = j.sample_id "
                    "JOIN samples s ON s.id = j.sample_id JOIN rounds r ON r.id = s.round_id "
                    "WHERE r.run_id = :r AND r.index = 1 AND s.purpose = 'train' "
                    "AND j.verifier = 'llm_judge' AND v.verifier = 'exact_answer'"
                ),
                {"r": run_id},
            ).one()
        engine.dispose()
        assert (agreement["agree"], agreement["compared"], agreement["samples"]) == tuple(expected)
        assert agreement["samples"] == len(train)
    else:
        assert round_one["agreement"] == []  # no model-based scorer ran

    if example == "rejection-sft":
        _rescore_checks(run_id, spec, tmp_path, db_url)


def _rescore_checks(run_id: int, spec: RunSpec, tmp_path: Path, db_url: str) -> None:
    """The `rescore` flow (what `flywheel rescore` and the deployment run): a new scorer
    adds one row per stored sample, once."""
    from dataflywheel.training.reward import build_tiny_reward_model
    from dataflywheel.training.tiny import TinyModelConfig
    from flows.rescore import rescore

    shape = TinyModelConfig(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128)
    model = build_tiny_reward_model(shape, tmp_path / "rm", 1, digit_bias=1)
    args = (run_id, ["exact_answer"], [{"name": "reward_model", "model": str(model)}])
    first = {r.verifier: r for r in rescore(*args)}
    total = first["exact_answer"].samples
    # exact_answer already scored every sample with this version: nothing new.
    assert first["exact_answer"].inserted == 0 and first["exact_answer"].already_scored == total
    assert first["reward_model"].inserted == total and first["reward_model"].already_scored == 0
    rm = first["reward_model"]
    assert rm.passed + rm.failed + rm.unscorable == total
    again = {r.verifier: r for r in rescore(*args)}
    assert again["reward_model"].inserted == 0 and again["reward_model"].already_scored == total
    engine = make_engine(db_url)
    with engine.connect() as conn:
        count = conn.execute(
            sa.text("SELECT count(*) FROM scores WHERE verifier = 'reward_model'")
        ).scalar_one()
        samples = conn.execute(sa.text("SELECT count(*) FROM samples")).scalar_one()
    engine.dispose()
    assert count == total and samples == total  # no sample was generated again

    # The reward model now scored every train sample beside exact_answer: the report
    # compares their verdicts round by round.
    from dataflywheel.reporting import report_json, run_report

    with session_scope(make_engine(db_url)) as session:
        (agreement,) = report_json(run_report(session, run_id))["rounds"][-1]["agreement"]
    train = spec.prompts.num_prompts * spec.generation.samples_per_prompt
    assert (agreement["judge"], agreement["verifier"]) == ("reward_model", "exact_answer")
    assert agreement["samples"] == train and agreement["compared"] <= train
