"""Run reports and checkpoint lineage on a realistic run, every expected number written out.

The run (written through the real ingestion paths for prompts, samples and scores):

    base #B (eval 0.1) --> round 0 warm-up #C0 promoted (eval 0.3, trained on 4 labelled rows)
                       --> round 1 #C1 promoted (eval 0.5; arith-hard 0.2)
                       --> round 2 #C2 rejected (eval 0.4)

    round 1: prompts p0..p2 x 2 samples by C0 = 6 train samples (+2 eval samples by C1)
             exact_answer 4 pass / 2 fail; format 4 pass / 1 fail / 1 unscorable
             dataset sft: 4 rows, seen 6, yield 4/6; C1 trained on it and on the warm-up set
    round 2: prompts p0..p3 x 2 samples by C1 = 8 train samples
             exact_answer 6 pass / 2 fail; format 6 pass / 0 fail / 2 unscorable
             dataset sft: 6 rows, seen 8, yield 0.75

A second run with its own samples must never show up in the first one's report.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from dataflywheel.db.ingest import (
    KeyedScoreRow,
    PromptRow,
    SampleRow,
    insert_samples,
    insert_scores_by_key,
    upsert_prompts,
)
from dataflywheel.db.models import (
    Checkpoint,
    CheckpointDataset,
    Dataset,
    DatasetMember,
    Evaluation,
    Round,
    Run,
)
from dataflywheel.lineage_view import checkpoint_lineage, render_lineage
from dataflywheel.reporting import (
    RunNotFound,
    list_runs,
    markdown,
    render_table,
    report_json,
    run_report,
    write_markdown,
    write_plot,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
EXACT, FORMAT = "exact_answer", "format"
STAGE_SECONDS = {
    "generate": 40.0,
    "verify": 5.0,
    "select": 1.0,
    "train": 60.0,
    "evaluate": 15.0,
    "promote": 0.5,
}

CURRICULUM = {"min_difficulty": 1, "max_difficulty": 1}

# round index -> {prompt number: [(exact passed, format passed or None=unscorable), ...]}
VERDICTS: dict[int, dict[int, list[tuple[bool, bool | None]]]] = {
    1: {
        0: [(True, True), (False, True)],
        1: [(True, False), (True, None)],
        2: [(True, True), (False, True)],
    },
    2: {
        0: [(True, True), (True, True)],
        1: [(True, None), (False, True)],
        2: [(True, True), (True, None)],
        3: [(False, True), (True, True)],
    },
}


def _insert(conn: sa.Connection, model: type, rows: list[dict[str, Any]]) -> list[int]:
    table = model.__table__  # type: ignore[attr-defined]
    # executemany needs one set of columns: a key some rows leave out is NULL in those rows.
    keys = {k for row in rows for k in row}
    rows = [{k: row.get(k) for k in keys} for row in rows]
    return list(conn.execute(sa.insert(table).returning(table.c.id), rows).scalars())


def _run(conn: sa.Connection, name: str, spec: dict[str, Any]) -> int:
    return _insert(conn, Run, [dict(name=name, spec=spec, spec_hash="0" * 64, status="succeeded")])[
        0
    ]


def _verdict(
    round_id: int,
    prompt_id: int,
    sample_index: int,
    verifier: str,
    passed: bool | None,
    purpose: str = "train",
) -> KeyedScoreRow:
    """A verifier's verdict; ``passed=None`` is an unscorable sample (value and passed null)."""
    return KeyedScoreRow(
        round_id=round_id,
        prompt_id=prompt_id,
        sample_index=sample_index,
        purpose=purpose,
        verifier=verifier,
        verifier_version="v1",
        value=None if passed is None else float(passed),
        passed=passed,
        status="unscorable" if passed is None else "scored",
        reason="no_answer" if passed is None else None,
    )


@pytest.fixture
def flywheel_run(engine: sa.Engine) -> dict[str, int]:
    """The run of the module docstring; returns the ids the assertions need."""
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        spec = {
            "name": "arith",
            "rounds": 2,
            "warmup": {"num_prompts": 4},
            "evaluation": {"primary": "accuracy", "metrics": ["accuracy"]},
        }
        run = ids["run"] = _run(conn, "arith", spec)
        prompt_ids = upsert_prompts(
            conn,
            [
                PromptRow(
                    prompt_set="arith",
                    split="train",
                    text=f"{i} + {i} =",
                    reference={"answer": str(2 * i)},
                    difficulty=1,
                )
                for i in range(4)
            ],
        )
        prompts = sorted(prompt_ids.values())
        # (index, started, finished, manifest): round 0 has no finish time, so its wall time
        # is the sum of its stages.
        round_rows = [
            (0, T0, None, {"stage_seconds": {"train": 30.0, "evaluate": 10.0}}),
            (
                1,
                T0 + timedelta(minutes=1),
                T0 + timedelta(minutes=1, seconds=125),
                {"stage_seconds": STAGE_SECONDS, "curriculum": CURRICULUM},
            ),
            (
                2,
                T0 + timedelta(minutes=5),
                T0 + timedelta(minutes=7, seconds=10),
                {"stage_seconds": STAGE_SECONDS},
            ),
        ]
        rounds = _insert(
            conn,
            Round,
            [
                dict(run_id=run, index=i, seed=i, status="succeeded", started_at=start,
                     finished_at=end, manifest=manifest)
                for i, start, end, manifest in round_rows
            ],
        )  # fmt: skip
        ids.update(round0=rounds[0], round1=rounds[1], round2=rounds[2])
        base = ids["base"] = _insert(
            conn,
            Checkpoint,
            [dict(run_id=run, round_id=None, status="base", source_uri="builtin:tiny")],
        )[0]
        ckpts: list[int] = []
        parent = base
        for rnd, status, loss, steps in zip(
            rounds,
            ("promoted", "promoted", "rejected"),
            (1.2, 0.42, 0.35),
            (20, 30, 40),
            strict=True,
        ):
            parent = _insert(
                conn,
                Checkpoint,
                [
                    dict(
                        run_id=run,
                        round_id=rnd,
                        parent_id=parent,
                        status=status,
                        training_metrics={"final_loss": loss, "steps": steps, "seconds": 12.5},
                    )
                ],
            )[0]
            ckpts.append(parent)
            # The rejected candidate does not become the next round's parent.
            if status == "rejected":
                parent = ckpts[-2]
        ids.update(c0=ckpts[0], c1=ckpts[1], c2=ckpts[2])

        # Train samples of rounds 1 and 2 (generated by C0 and C1), plus eval samples of C1.
        generated_by = {1: ids["c0"], 2: ids["c1"]}
        insert_samples(
            conn,
            [
                SampleRow(
                    round_id=rounds[idx],
                    prompt_id=prompts[p],
                    checkpoint_id=generated_by[idx],
                    sample_index=k,
                    seed=k,
                    text=f"answer {k}",
                    sampling_params={},
                )
                for idx, by_prompt in VERDICTS.items()
                for p, verdicts in by_prompt.items()
                for k in range(len(verdicts))
            ]
            + [
                SampleRow(
                    round_id=rounds[1],
                    prompt_id=prompts[0],
                    checkpoint_id=ids["c1"],
                    sample_index=k,
                    seed=k,
                    text="eval",
                    sampling_params={},
                    purpose="eval",
                )
                for k in range(2)
            ],
        )
        scores = [
            _verdict(rounds[idx], prompts[p], k, verifier, passed)
            for idx, by_prompt in VERDICTS.items()
            for p, verdicts in by_prompt.items()
            for k, pair in enumerate(verdicts)
            for verifier, passed in zip((EXACT, FORMAT), pair, strict=True)
        ]
        # The eval samples' verdicts must not count towards the round's pass rate.
        scores += [_verdict(rounds[1], prompts[0], k, EXACT, False, "eval") for k in range(2)]
        insert_scores_by_key(conn, scores)

        # Selection: the samples that passed exact_answer, in sample order.
        passed_by_round: dict[int, list[int]] = {}
        for idx in (1, 2):
            rows = conn.execute(
                sa.text(
                    "SELECT s.id FROM samples s JOIN scores sc ON sc.sample_id = s.id "
                    "WHERE s.round_id = :r AND s.purpose = 'train' AND sc.verifier = :v "
                    "AND sc.passed ORDER BY s.id"
                ),
                {"r": rounds[idx], "v": EXACT},
            )
            passed_by_round[idx] = list(rows.scalars())
        # (round id, name, kind, row count, stats) of the selected sets and the eval set
        dataset_rows = [
            (rounds[0], "warmup", "sft", 4, {"counts": {"labelled": 4}}),
            (rounds[1], "sft", "sft", 4, {"seen": 6, "kept": 4, "yield": 4 / 6}),
            (rounds[2], "sft", "sft", 6, {"seen": 8, "kept": 6, "yield": 0.75}),
            (None, "arith-eval", "eval", 1, {}),
        ]
        datasets = _insert(
            conn,
            Dataset,
            [
                dict(run_id=run, round_id=rnd, name=name, kind=kind, digest=f"{i}" * 64,
                     object_key=f"d/{i}", row_count=rows, stats=stats)
                for i, (rnd, name, kind, rows, stats) in enumerate(dataset_rows)
            ],
        )  # fmt: skip
        ids.update(d_warmup=datasets[0], d1=datasets[1], d2=datasets[2])
        assert [len(passed_by_round[1]), len(passed_by_round[2])] == [4, 6]
        _insert(
            conn,
            DatasetMember,
            [dict(dataset_id=datasets[0], position=i, prompt_id=prompts[i]) for i in range(4)]
            + [
                # Pseudo-labels: right for even positions, wrong for odd ones (an audit of 1/2).
                dict(
                    dataset_id=datasets[1],
                    position=i,
                    sample_id=s,
                    prompt_id=prompts[i],
                    label=str(2 * i) if i % 2 == 0 else "wrong",
                )
                for i, s in enumerate(passed_by_round[1])
            ]
            + [
                dict(dataset_id=datasets[2], position=i, sample_id=s)
                for i, s in enumerate(passed_by_round[2])
            ]
            + [dict(dataset_id=datasets[3], position=0, prompt_id=prompts[0])],
        )
        conn.execute(
            sa.insert(CheckpointDataset.__table__),
            [
                dict(checkpoint_id=ids["c0"], dataset_id=datasets[0], share=1.0),
                dict(checkpoint_id=ids["c1"], dataset_id=datasets[1], share=0.5),
                dict(checkpoint_id=ids["c1"], dataset_id=datasets[0], share=0.5),
                dict(checkpoint_id=ids["c2"], dataset_id=datasets[2], share=1.0),
            ],
        )
        _insert(
            conn,
            Evaluation,
            [
                dict(
                    checkpoint_id=ckpt,
                    round_id=rnd,
                    eval_set=eval_set,
                    metrics={"accuracy": v},
                    primary_metric="accuracy",
                    primary_value=v,
                )
                for ckpt, rnd, eval_set, v in [
                    (base, None, "arith-eval", 0.1),
                    (ids["c0"], rounds[0], "arith-eval", 0.3),
                    (ids["c1"], rounds[1], "arith-eval", 0.5),
                    (ids["c1"], rounds[1], "arith-hard", 0.2),
                    (ids["c2"], rounds[2], "arith-eval", 0.4),
                ]
            ],
        )

        # Another run: its samples, datasets and checkpoints must stay out of run 1's report.
        other = ids["other_run"] = _run(conn, "other", {"rounds": 1})
        other_round = _insert(conn, Round, [dict(run_id=other, index=1, seed=9)])[0]
        other_base = _insert(conn, Checkpoint, [dict(run_id=other, status="base")])[0]
        insert_samples(
            conn,
            [
                SampleRow(
                    round_id=other_round,
                    prompt_id=prompts[0],
                    checkpoint_id=other_base,
                    sample_index=k,
                    seed=k,
                    text="x",
                    sampling_params={},
                )
                for k in range(5)
            ],
        )
    return ids


@pytest.fixture
def session(engine: sa.Engine) -> Iterator[Session]:
    with Session(engine) as s:
        yield s


# --------------------------------------------------------------------------- report


def test_report_json_holds_every_number(flywheel_run: dict[str, int], session: Session) -> None:
    doc = report_json(run_report(session, flywheel_run["run"]))
    json.dumps(doc)  # plain JSON types only

    assert doc["schema_version"] == 1
    assert doc["run"] | {"created_at": None} == {
        "id": flywheel_run["run"],
        "name": "arith",
        "status": "succeeded",
        "primary_metric": "accuracy",
        "rounds_planned": 2,
        "warmup": True,
        "created_at": None,
        "started_at": None,
        "finished_at": None,
    }
    assert doc["baseline"]["checkpoint_id"] == flywheel_run["base"]
    assert doc["baseline"]["primary"] == 0.1 and doc["baseline"]["delta"] is None

    r0, r1, r2 = doc["rounds"]
    assert [r["index"] for r in doc["rounds"]] == [0, 1, 2]
    assert [r["warmup"] for r in doc["rounds"]] == [True, False, False]
    assert [r["eval"]["primary"] for r in doc["rounds"]] == [0.3, 0.5, 0.4]
    assert [r["eval"]["delta"] for r in doc["rounds"]] == pytest.approx([0.2, 0.2, -0.1])
    assert [r["promoted"] for r in doc["rounds"]] == [True, True, False]
    assert [r["promotion"] for r in doc["rounds"]] == ["promoted", "promoted", "rejected"]
    assert [(r["prompts"], r["samples"]) for r in doc["rounds"]] == [(0, 0), (3, 6), (4, 8)]

    assert [r["label_accuracy"] for r in doc["rounds"]] == [None, 0.5, None]
    assert [r["agreement"] for r in doc["rounds"]] == [[], [], []]  # no model scorer ran
    assert r0["verifiers"] == []
    assert r1["verifiers"] == [
        {
            "name": EXACT,
            "version": "v1",
            "passed": 4,
            "failed": 2,
            "unscorable": 0,
            "pass_rate": pytest.approx(4 / 6),
        },
        {
            "name": FORMAT,
            "version": "v1",
            "passed": 4,
            "failed": 1,
            "unscorable": 1,
            "pass_rate": pytest.approx(0.8),
        },
    ]
    assert r2["verifiers"] == [
        {
            "name": EXACT,
            "version": "v1",
            "passed": 6,
            "failed": 2,
            "unscorable": 0,
            "pass_rate": 0.75,
        },
        {
            "name": FORMAT,
            "version": "v1",
            "passed": 6,
            "failed": 0,
            "unscorable": 2,
            "pass_rate": 1.0,
        },
    ]

    assert [(r["kept"], r["seen"]) for r in doc["rounds"]] == [(4, None), (4, 6), (6, 8)]
    assert [r["yield"] for r in doc["rounds"]] == [None, pytest.approx(4 / 6), 0.75]
    assert [[d["id"] for d in r["datasets"]] for r in doc["rounds"]] == [
        [flywheel_run["d_warmup"]],
        [flywheel_run["d1"]],
        [flywheel_run["d2"]],
    ]

    assert r1["training"] == {
        "checkpoint_id": flywheel_run["c1"],
        "parent_id": flywheel_run["c0"],
        "status": "promoted",
        "final_loss": 0.42,
        "steps": 30,
        "seconds": 12.5,
        "rows": 8,
        "dataset_ids": sorted([flywheel_run["d_warmup"], flywheel_run["d1"]]),
    }
    assert r2["training"]["parent_id"] == flywheel_run["c1"]
    assert [r["training"]["rows"] for r in doc["rounds"]] == [4, 8, 6]
    assert [r["eval"]["eval_set"] for r in doc["rounds"]] == ["arith-eval"] * 3
    assert [(e["eval_set"], e["primary"], e["delta"]) for e in r1["other_evals"]] == [
        ("arith-hard", 0.2, None)  # the parent was never measured on arith-hard
    ]

    # Wall time when the round finished, the stages' sum while it has no finish time.
    assert [r["seconds"] for r in doc["rounds"]] == [40.0, 125.0, 130.0]
    assert list(r1["stage_seconds"]) == [
        "generate",
        "verify",
        "select",
        "train",
        "evaluate",
        "promote",
    ]
    assert r1["curriculum"] == CURRICULUM
    assert r2["curriculum"] is None

    assert doc["summary"] == {
        "best_round": 1,
        "best_primary": 0.5,
        "promoted_checkpoint_id": flywheel_run["c1"],
        "promoted_primary": 0.5,
        "gain_over_baseline": pytest.approx(0.4),
    }


# round 1's train samples as the judge saw them (None: unscorable), in VERDICTS' order
JUDGED = {0: [True, True], 1: [False, None], 2: [True, False]}


def test_judge_vs_verifier_agreement_where_both_ran(
    flywheel_run: dict[str, int], engine: sa.Engine, session: Session
) -> None:
    """An llm_judge on round 1's train samples and a reward model on two of round 2's are
    compared with the rule verifiers on exactly the samples both scored."""
    with engine.begin() as conn:
        prompts = list(conn.execute(sa.text("SELECT id FROM prompts ORDER BY id")).scalars())
        r1, r2 = flywheel_run["round1"], flywheel_run["round2"]
        insert_scores_by_key(
            conn,
            [
                _verdict(r1, prompts[p], k, "llm_judge", passed)
                for p, verdicts in JUDGED.items()
                for k, passed in enumerate(verdicts)
            ]
            # eval samples never count, and the reward model ran on prompt 0 of round 2 only
            + [_verdict(r1, prompts[0], k, "llm_judge", True, "eval") for k in range(2)]
            + [_verdict(r2, prompts[0], k, "reward_model", True) for k in range(2)],
        )
    report = run_report(session, flywheel_run["run"])
    doc = report_json(report)
    r0, r1_doc, r2_doc = doc["rounds"]
    assert r0["agreement"] == []
    # judge vs exact_answer: (T,T) (T,F) (F,T) (None,T) (T,T) (F,F)
    # judge vs format:       (T,T) (T,T) (F,F) (None,None) (T,T) (F,T)
    assert r1_doc["agreement"] == [
        {
            "judge": "llm_judge",
            "judge_version": "v1",
            "verifier": EXACT,
            "verifier_version": "v1",
            "samples": 6,
            "compared": 5,
            "agree": 3,
            "rate": pytest.approx(0.6),
            "kappa": pytest.approx((0.6 - 0.52) / 0.48),
            "both_pass": 2,
            "both_fail": 1,
            "judge_only": 1,
            "verifier_only": 1,
            "unscorable": 1,
        },
        {
            "judge": "llm_judge",
            "judge_version": "v1",
            "verifier": FORMAT,
            "verifier_version": "v1",
            "samples": 6,
            "compared": 5,
            "agree": 4,
            "rate": pytest.approx(0.8),
            "kappa": pytest.approx((0.8 - 0.56) / 0.44),
            "both_pass": 3,
            "both_fail": 1,
            "judge_only": 0,
            "verifier_only": 1,
            "unscorable": 1,
        },
    ]
    assert [(a["judge"], a["verifier"], a["samples"], a["agree"], a["rate"], a["kappa"])
            for a in r2_doc["agreement"]] == [
        ("reward_model", EXACT, 2, 2, 1.0, None),  # one verdict throughout: no κ
        ("reward_model", FORMAT, 2, 2, 1.0, None),
    ]  # fmt: skip

    md = markdown(report)
    assert "## Data health" in md
    assert "| 1 | llm_judge | exact_answer | 5 | 3 | 60.0% | 0.17 | 1 | 1 | 1 |" in md
    assert "| 1 | llm_judge | format | 5 | 4 | 80.0% | 0.55 | 0 | 1 | 1 |" in md
    assert "| 2 | reward_model | format | 2 | 2 | 100.0% | – | 0 | 0 | 0 |" in md


def test_unknown_run_is_a_lookup_error(flywheel_run: dict[str, int], session: Session) -> None:
    with pytest.raises(RunNotFound, match=r"run 4242 does not exist; `flywheel runs`"):
        run_report(session, 4242)
    assert issubclass(RunNotFound, LookupError)


def test_run_without_rounds_reports_empty(engine: sa.Engine, session: Session) -> None:
    with engine.begin() as conn:
        run = _run(conn, "fresh", {"rounds": 3})
    report = run_report(session, run)
    doc = report_json(report)
    assert doc["rounds"] == [] and doc["baseline"] is None
    assert doc["summary"]["promoted_checkpoint_id"] is None
    assert "no checkpoint promoted yet" in markdown(report)


def test_round_the_gate_skipped(
    flywheel_run: dict[str, int], engine: sa.Engine, session: Session
) -> None:
    """A round that kept nothing trains no checkpoint: the gate's "skipped" is reported."""
    with engine.begin() as conn:
        _insert(
            conn,
            Round,
            [dict(run_id=flywheel_run["run"], index=3, seed=3, status="succeeded",
                  manifest={"promotion": {"decision": "skipped", "reason": "no data kept"}})],
        )  # fmt: skip
    report = run_report(session, flywheel_run["run"])
    last = report_json(report)["rounds"][-1]
    assert (last["index"], last["promoted"], last["promotion"]) == (3, None, "skipped")
    assert (last["training"], last["eval"], last["kept"], last["yield"]) == (None, None, 0, None)
    assert "| 3 | succeeded | 0 | 0 | – | – | – | – | – | skipped | – |" in markdown(report)


def test_list_runs(flywheel_run: dict[str, int], session: Session) -> None:
    listed = [(r.id, r.name, r.rounds_done, r.rounds_planned) for r in list_runs(session)]
    assert listed == [
        (flywheel_run["other_run"], "other", 0, 1),
        (flywheel_run["run"], "arith", 3, 3),
    ]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_markdown_and_plot_are_written(
    flywheel_run: dict[str, int], session: Session, tmp_path: Path
) -> None:
    report = run_report(session, flywheel_run["run"])
    png = write_plot(report, tmp_path / "out" / "report.png")
    assert png.stat().st_size > 10_000
    width, height = _png_size(png)
    assert width >= 800 and height >= 400

    md = write_markdown(report, tmp_path / "out" / "report.md", plot="report.png").read_text()
    assert "# Run" in md and "![accuracy and yield per round](report.png)" in md
    header = (
        "| round | status | prompts | samples | pass rate | kept (yield) | loss | accuracy "
        "| Δ | promoted | time |"
    )
    assert header in md
    assert "| base | – | – | – | – | – | – | 0.100 | – |" in md
    assert (
        "| 1 | succeeded | 3 | 6 | exact_answer 66.7%<br>format 80.0% (1 unscorable) "
        f"| 4 (66.7%)<br>labels 50.0% right | 0.420 | 0.500 | +0.200 "
        f"| ✓ #{flywheel_run['c1']} promoted | 2m 05s |"
    ) in md
    assert f"| −0.100 | ✗ #{flywheel_run['c2']} rejected | 2m 10s |" in md
    assert "| 0 (warm-up) | succeeded | 0 | 0 | – | 4 | 1.200 | 0.300 | +0.200 |" in md
    assert "## Verifiers" in md and "| 2 | format | v1 | 6 | 0 | 2 | 100.0% |" in md
    assert "## Stage durations" in md


def test_rich_table_shows_every_round(flywheel_run: dict[str, int], session: Session) -> None:
    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    console.print(render_table(run_report(session, flywheel_run["run"])))
    text = console.export_text()
    for needle in (
        "accuracy",
        "0 (warm-up)",
        "+0.200",
        "−0.100",
        "4 (66.7%)",
        "6 (75.0%)",
        "format 80.0% (1 unscorable)",
        "current model: checkpoint",
    ):
        assert needle in text


def test_round_artifacts_on_prefect_even_when_the_report_files_cannot_be_written(
    flywheel_run: dict[str, int],
    db_url: str,
    prefect_api: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``finish_round`` publishes, on the session's real Prefect server: the table and
    the report's Markdown. A data dir that cannot hold the files (here ``reports`` is a
    file) loses only the files: the artifact says so and the round is not failed."""
    from prefect import flow
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks import context
    from tasks.rounds import publish_artifacts, report_key, table_key

    run = flywheel_run["run"]
    data = tmp_path / "data"
    data.mkdir()
    (data / "reports").write_text("not a folder")
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", db_url)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(data))

    @flow(name="publish_artifacts_test", persist_result=False)
    def publish() -> Path | None:
        return publish_artifacts(run, 2)

    # The session's server also holds artifacts of other tests' runs with this id.
    since = datetime.now(UTC)
    context.reset()
    try:
        with temporary_settings({PREFECT_API_URL: prefect_api}):
            assert publish() is None
    finally:
        context.reset()
    with SyncPrefectClient(prefect_api) as client:
        table, report = (
            [
                a
                for a in client.read_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[k]))
                )
                if a.created >= since
            ]
            for k in (table_key(run), report_key(run))
        )
    (table,), (report,) = table, report
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [(r["round"], r["primary"], r["promotion"]) for r in rows] == [
        (0, 0.3, "promoted"),
        (1, 0.5, "promoted"),
        (2, 0.4, "rejected"),
    ]
    assert report.type == "markdown" and report.description.endswith("after round 2")
    assert report.data.startswith(f"# Run {run}: arith\n\nReport files not written to")
    assert f"Refresh: `flywheel report {run}`." in report.data
    assert "## Rounds" in report.data and "## Verifiers" in report.data


# --------------------------------------------------------------------------- lineage


def test_checkpoint_lineage(flywheel_run: dict[str, int], session: Session) -> None:
    ids = flywheel_run
    doc = checkpoint_lineage(session, ids["c2"])
    json.dumps(doc)
    assert doc["checkpoint_id"] == ids["c2"]
    assert [(c["id"], c["depth"], c["status"]) for c in doc["chain"]] == [
        (ids["c2"], 0, "rejected"),
        (ids["c1"], 1, "promoted"),
        (ids["c0"], 2, "promoted"),
        (ids["base"], 3, "base"),
    ]
    c2, c1, c0, base = doc["chain"]
    assert [(e["eval_set"], e["primary"]) for e in c1["evaluations"]] == [
        ("arith-eval", 0.5),
        ("arith-hard", 0.2),
    ]
    assert base["source_uri"] == "builtin:tiny" and base["datasets"] == []
    (trained,) = c2["datasets"]
    assert (trained["id"], trained["round_index"], trained["rows"]) == (ids["d2"], 2, 6)
    assert trained["sources"] == [
        {
            "role": "chosen",
            "run_id": ids["run"],
            "round_index": 2,
            "generated_by": ids["c1"],
            "samples": 6,
        }
    ]
    assert [
        (v["verifier"], v["passed"], v["failed"], v["unscorable"]) for v in trained["verifiers"]
    ] == [(EXACT, 6, 0, 0), (FORMAT, 4, 0, 2)]
    assert [d["id"] for d in c1["datasets"]] == sorted([ids["d_warmup"], ids["d1"]])
    # Warm-up rows are prompts with references: no samples, so no sample sources.
    assert doc["samples_by_round"] == [
        {"run_id": ids["run"], "round_index": 1, "generated_by": ids["c0"], "samples": 4},
        {"run_id": ids["run"], "round_index": 2, "generated_by": ids["c1"], "samples": 6},
    ]

    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    console.print(render_lineage(doc))
    text = console.export_text()
    assert f"lineage of checkpoint #{ids['c2']}" in text
    assert f"↑ parent: checkpoint #{ids['c1']}" in text
    assert "format@v1: 4 passed, 0 failed, 2 unscorable" in text


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Iterator[tuple[CliRunner, typer.Typer, dict[str, str]]]:
    """The real ``flywheel`` app, its environment pointed at this test's database."""
    from dataflywheel.cli import app

    env = {
        "FLYWHEEL_DATABASE_URL": db_url,
        "FLYWHEEL_DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "200",
    }
    yield CliRunner(), app, env


def test_cli_report_json_and_files(
    flywheel_run: dict[str, int],
    cli: tuple[CliRunner, typer.Typer, dict[str, str]],
    tmp_path: Path,
) -> None:
    runner, app, env = cli
    run = flywheel_run["run"]
    result = runner.invoke(app, ["report", str(run), "--json"], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["eval"]["primary"] for r in doc["rounds"]] == [0.3, 0.5, 0.4]
    assert not (tmp_path / "data" / "reports").exists()  # --json writes nothing

    result = runner.invoke(app, ["report", str(run)], env=env)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "data" / "reports" / f"run-{run}"
    assert (folder / "report.md").is_file() and (folder / "report.png").stat().st_size > 10_000
    assert "kept (yield)" in result.stdout and "report.md" in result.stdout

    custom = tmp_path / "custom"
    result = runner.invoke(app, ["report", str(run), "--out", str(custom)], env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in custom.iterdir()) == ["report.md", "report.png"]


def test_cli_runs_and_lineage(
    flywheel_run: dict[str, int], cli: tuple[CliRunner, typer.Typer, dict[str, str]]
) -> None:
    runner, app, env = cli
    result = runner.invoke(app, ["runs", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [(r["name"], r["rounds_done"]) for r in json.loads(result.stdout)] == [
        ("other", 0),
        ("arith", 3),
    ]
    result = runner.invoke(app, ["runs"], env=env)
    assert result.exit_code == 0 and "3/3" in result.stdout and "arith" in result.stdout

    c2 = flywheel_run["c2"]
    result = runner.invoke(app, ["lineage", str(c2), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [c["status"] for c in json.loads(result.stdout)["chain"]] == [
        "rejected",
        "promoted",
        "promoted",
        "base",
    ]
    result = runner.invoke(app, ["lineage", str(c2)], env=env)
    assert result.exit_code == 0 and f"lineage of checkpoint #{c2}" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "4242"], "run 4242 does not exist; `flywheel runs` lists the runs"),
        (["report", "4242", "--json"], "run 4242 does not exist"),
        (["lineage", "4242"], "checkpoint 4242 does not exist; `flywheel report RUN_ID`"),
    ],
)
def test_cli_unknown_ids_exit_1(
    flywheel_run: dict[str, int],
    cli: tuple[CliRunner, typer.Typer, dict[str, str]],
    args: list[str],
    message: str,
) -> None:
    runner, app, env = cli
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error:" in result.stderr and message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_cli_unreachable_database_is_one_clear_error(
    cli: tuple[CliRunner, typer.Typer, dict[str, str]],
) -> None:
    runner, app, env = cli
    env["FLYWHEEL_DATABASE_URL"] = "postgresql://flywheel:secret@127.0.0.1:9/flywheel"
    result = runner.invoke(app, ["runs"], env=env)
    assert result.exit_code == 1 and "FLYWHEEL_DATABASE_URL" in result.stderr
