"""How much of a round is plumbing: per-stage wall time vs the compute inside it.

Runs a real run (tiny model, transformers backend, embedded PostgreSQL, local store, local
Ray, a local Prefect server) and reads back what the round recorded: ``stage_seconds`` (wall
time of each stage as the flow saw it) and ``compute_seconds`` (time spent inside the model
backend, the trainer and the verifiers, measured where that code ran). The rest — database,
object store, Prefect task machinery, Ray scheduling and transfers — is overhead.

Target (issue 3): overhead ≤ 10% of the round.

    .venv/bin/python bench/round_overhead.py [--prompts 500] [--samples 8] [--steps 150]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# compute_seconds keys that belong to each flow stage
STAGE_COMPUTE = {
    "generate": ("generate_train",),
    "verify": ("verify_train",),
    "select": (),
    "train": ("train",),
    "evaluate": (
        "generate_eval",
        "verify_eval",
        "generate_baseline",
        "verify_baseline",
    ),
    "promote": (),
}


def spec_dict(prompts: int, samples: int, steps: int) -> dict:
    return {
        "name": "bench-round-overhead",
        "seed": 5,
        "rounds": 1,
        "model": {"source": "builtin:tiny-llama", "tiny": {"max_seq_len": 32}},
        "prompts": {
            "kind": "builtin",
            "family": "addition",
            "reversed_digits": True,
            "min_difficulty": 2,
            "max_difficulty": 4,
            "num_prompts": prompts,
        },
        "generation": {
            "backend": "transformers",
            "samples_per_prompt": samples,
            "temperature": 1.0,
            "max_tokens": 8,
        },
        "verification": {
            "verifiers": [
                {"name": "exact_answer", "extract": "full", "strict": True},
                {"name": "majority_vote", "extract": "full", "min_agreement": 0.5},
            ]
        },
        "selection": {"recipe": "majority_vote", "min_agreement": 0.25},
        "training": {
            "method": "sft",
            "mode": "full",
            "learning_rate": 0.001,
            "max_steps": steps,
            "batch_size": 64,
        },
        "evaluation": {
            "metrics": ["accuracy"],
            "primary": "accuracy",
            "verifier": "exact_answer",
            "num_prompts": 200,
            "samples_per_prompt": 1,
            "temperature": 0.0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    os.environ["FLYWHEEL_DATA_DIR"] = str(tmp / "data")
    os.environ["FLYWHEEL_STORE_URI"] = str(tmp / "objects")
    for var in ("FLYWHEEL_PREFECT_API_URL", "PREFECT_API_URL"):
        os.environ.pop(var, None)

    from dataflywheel import prefect_server
    from dataflywheel.config import Settings
    from dataflywheel.db import embedded, migrate
    from dataflywheel.db.session import engine_from_settings
    from dataflywheel.spec import RunSpec

    settings = Settings()
    engine = engine_from_settings(settings)
    migrate.upgrade(engine)
    server = prefect_server.start(settings)
    os.environ["PREFECT_API_URL"] = server.api_url
    from flows.flywheel_run import flywheel_run

    spec = RunSpec.model_validate(spec_dict(args.prompts, args.samples, args.steps))
    start = time.perf_counter()
    try:
        run_id = flywheel_run(spec)
        wall = time.perf_counter() - start
        import sqlalchemy as sa

        with engine.connect() as conn:
            manifest = conn.execute(
                sa.text("SELECT manifest FROM rounds WHERE run_id = :r AND index = 1"),
                {"r": run_id},
            ).scalar_one()
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        prefect_server.stop(settings)
        engine.dispose()
        if not settings.database_url:
            embedded.stop(settings.embedded_pgdata)

    stages, compute = manifest["stage_seconds"], manifest.get("compute_seconds", {})
    print(f"\nround 1 of a run with {args.prompts} prompts x {args.samples} samples, "
          f"{args.steps} training steps (whole run {wall:.1f} s)\n")  # fmt: skip
    print(f"{'stage':<10}{'wall s':>10}{'compute s':>12}{'overhead s':>12}{'overhead':>10}")
    total_wall = total_compute = 0.0
    for stage, keys in STAGE_COMPUTE.items():
        if stage not in stages:
            continue
        w = stages[stage]
        c = sum(compute.get(k, 0.0) for k in keys)
        total_wall += w
        total_compute += c
        print(f"{stage:<10}{w:>10.2f}{c:>12.2f}{w - c:>12.2f}{(w - c) / w:>10.1%}")
    overhead = total_wall - total_compute
    share = overhead / total_wall
    print(f"{'round':<10}{total_wall:>10.2f}{total_compute:>12.2f}{overhead:>12.2f}{share:>10.1%}")
    verdict = "met" if share <= 0.10 else "missed"
    print(f"\nplumbing share of the round: {share:.1%} (target <= 10%: {verdict})")


if __name__ == "__main__":
    main()
