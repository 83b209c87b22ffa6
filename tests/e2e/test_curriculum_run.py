"""A curriculum run as users run it: ``flywheel run`` then ``flywheel report`` as subprocesses,
a 3-level addition curriculum on the tiny model with the per-level gate (``gate: top_level``).

Threshold 0.0 makes every top level pass, so the band must climb one level a round
(1 → 1-2 → 1-3), each round drawing 9 of its 12 problems at the band's top
(``lower_share: 0.25``); each round's manifest records the band, the decision and the per-level
accuracies it read, every trained checkpoint is evaluated on all three levels' held-out
prompts, and the report shows those accuracies per round (table, Markdown and JSON). That a
threshold the top level misses holds the band is the decision logic's (tests/unit/
test_curriculum.py), not worth a second run here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from dataflywheel.config import Settings
from tests.cli_support import flywheel
from tests.invariant_support import query, violations

pytestmark = pytest.mark.slow


def test_the_band_climbs_per_level_and_the_report_shows_each_level(
    flywheel_env: Settings, tiny_spec: dict, db_url: str, tmp_path: Path
) -> None:
    tiny_spec["rounds"] = 3
    tiny_spec.pop("warmup")  # the gate reads each round's evaluation; a warm-up adds nothing
    tiny_spec["prompts"].update(min_difficulty=1, max_difficulty=1, num_prompts=12)
    # lower_share: a quarter of each round's 12 problems below the band's top, 9 at it.
    tiny_spec["curriculum"] = {
        "threshold": 0.0,
        "max_level": 3,
        "max_lower_drop": 1.0,
        "lower_share": 0.25,
    }
    # 3 held-out prompts per level (1-digit addition holds only 9).
    tiny_spec["evaluation"]["num_prompts"] = 9
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    env = {**os.environ, "COLUMNS": "240"}

    done = flywheel("run", str(spec_file), env=env, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    (run_id,) = query(db_url, "SELECT id FROM runs")[0]
    assert query(db_url, "SELECT status FROM runs WHERE id = :r", r=run_id) == [("succeeded",)]
    assert violations(db_url, flywheel_env, run_id) == []

    rounds = query(
        db_url,
        "SELECT index, manifest->'curriculum' FROM rounds WHERE run_id = :r ORDER BY index",
        r=run_id,
    )
    bands = [(c["min_difficulty"], c["max_difficulty"]) for _, c in rounds]
    assert bands == [(1, 1), (1, 2), (1, 3)]
    assert [c["decision"] for _, c in rounds] == ["start", "climb", "climb"]
    # Each decision read the incumbent's accuracy on every level, the next band's top too.
    for _, c in rounds[1:]:
        assert set(c["levels"]) == {"1", "2", "3"}, c
    # The training prompts followed the band, operands at their natural width (fixed_width
    # null): the longest "a+b=" of a band whose top is n is 2n + 2 characters.
    levels = query(
        db_url,
        "SELECT r.index, min(p.difficulty), max(p.difficulty), min(length(p.text)), "
        "max(length(p.text)) FROM samples s JOIN rounds r ON r.id = s.round_id "
        "JOIN prompts p ON p.id = s.prompt_id WHERE r.run_id = :r AND s.purpose = 'train' "
        "GROUP BY 1 ORDER BY 1",
        r=run_id,
    )
    assert [(lo, hi) for _, lo, hi, _, _ in levels] == bands
    assert [(short, long) for *_, short, long in levels] == [(4, 4), (4, 6), (4, 8)]
    at_top = query(
        db_url,
        "SELECT r.index, count(DISTINCT p.id) FILTER (WHERE p.difficulty = "
        "(r.manifest->'curriculum'->>'max_difficulty')::int), count(DISTINCT p.id) "
        "FROM samples s JOIN rounds r ON r.id = s.round_id JOIN prompts p ON p.id = s.prompt_id "
        "WHERE r.run_id = :r AND s.purpose = 'train' GROUP BY 1 ORDER BY 1",
        r=run_id,
    )
    assert at_top == [(1, 12, 12), (2, 9, 12), (3, 9, 12)]
    # One fixed held-out set: 3 prompts on each level, none of them ever trained on.
    evals = query(
        db_url,
        "SELECT p.difficulty, count(DISTINCT p.id) FROM samples s JOIN prompts p "
        "ON p.id = s.prompt_id WHERE s.purpose = 'eval' GROUP BY 1 ORDER BY 1",
    )
    assert evals == [(1, 3), (2, 3), (3, 3)]
    overlap = query(
        db_url,
        "SELECT count(*) FROM samples e JOIN samples t ON t.prompt_id = e.prompt_id "
        "WHERE e.purpose = 'eval' AND t.purpose = 'train'",
    )
    assert overlap == [(0,)]

    shown = flywheel("report", str(run_id), "--json", env=env, timeout=400)
    assert shown.returncode == 0, shown.stderr[-3000:]
    report = json.loads(shown.stdout)
    by_round = {r["index"]: r for r in report["rounds"]}
    for index, band in zip((1, 2, 3), bands, strict=True):
        r = by_round[index]
        assert (r["curriculum"]["min_difficulty"], r["curriculum"]["max_difficulty"]) == band
        assert set(r["level_accuracy"]) == {"1", "2", "3"}
        assert r["level_accuracy"] == r["eval"]["metrics"]["per_difficulty_accuracy"]
    table = flywheel("report", str(run_id), "--out", str(tmp_path / "report"), env=env, timeout=400)
    assert table.returncode == 0, table.stderr[-3000:]
    assert "L3 " in table.stdout and "band 1-3" in table.stdout, table.stdout
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Difficulty levels" in md and "| level 3 |" in md, md
