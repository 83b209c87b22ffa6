"""The flow process never imports torch, transformers or vLLM (docs/architecture.md)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "vllm", "trl", "peft")
FLOW_SIDE = (
    "flows.flywheel_run",
    "flows.flywheel_round",
    "flows.replay",
    "flows.rescore",
    "tasks.replay",
    "tasks.rescore",
    "dataflywheel.replay",
    "dataflywheel.db.invariants",
    "tasks.generate",
    "tasks.verify",
    "tasks.select",
    "tasks.train",
    "tasks.evaluate",
    "tasks.promote",
    "tasks.rounds",
    "tasks.runs",
    "tasks.lineage",
    "dataflywheel.lineage_events.events",
    "dataflywheel.lineage_events.emitter",
    "dataflywheel.db.stage_facts",
    "workers.driver.ray_session",
    "workers.driver.placement",
    "workers.driver.health",
    "workers.driver.generator_pool",
    "workers.driver.sharded",
    "workers.driver.scoring",
    "dataflywheel.rounds.manifest",
    "dataflywheel.rounds.mix",
    "dataflywheel.db.samples",
    "dataflywheel.db.checkpoints",
    "workers.verify",
    "workers.generator",
    "workers.trainer",
    "workers.bootstrap",
    "dataflywheel.training.tiny",
    "dataflywheel.cli",
    "dataflywheel.cli.main",
    "dataflywheel.deploy",
    "dataflywheel.reporting",
    "dataflywheel.generation",
    "dataflywheel.training",
)


def test_flow_side_modules_import_no_model_libraries() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {FLOW_SIDE!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"heavy modules imported: {result.stdout}"
