"""How much of a round is plumbing: per-stage wall time vs the compute inside it.

Runs a real run (tiny model, transformers backend, embedded PostgreSQL, local store, local
Ray, a local Prefect server) and reads back what the round recorded: ``stage_seconds`` (wall
time of each stage as the flow saw it) and ``compute_seconds`` (time spent inside the model
backend, the trainer and the verifiers, measured where that code ran). The rest — database,
object store, Prefect task machinery, Ray scheduling and transfers — is overhead.

Target (issue 3): overhead ≤ 10% of the round.

    .venv/bin/python bench/round_overhead.py [--prompts 500] [--samples 8] [--steps 150]
    FLYWHEEL_DATA_DIR=DIR .venv/bin/python bench/round_overhead.py --run-id N

The second form reads every self-training round of a run that already exists (e.g. the
arithmetic example's, a real workload) instead of running a small one. With peer models
(``training.peers``) each peer's compute is recorded separately and their generate and
train tasks may overlap in time, so the compute inside a stage lies between the largest
peer's share (peers fully in parallel) and the sum (one after the other): the table prints
the overhead for both bounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# compute_seconds keys (or their prefixes: a peer's keys end in _peer1, ...) of each stage
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


def stage_compute(compute: dict[str, float], keys: tuple[str, ...]) -> tuple[float, float]:
    """(largest peer's, sum over peers) compute seconds of a stage's keys."""
    per_peer: dict[str, float] = {}
    for name, seconds in compute.items():
        for key in keys:
            if name == key or name.startswith(f"{key}_peer"):
                peer = name.removeprefix(key) or "_peer0"
                per_peer[peer] = per_peer.get(peer, 0.0) + seconds
    if "train" in keys and "train" in compute:  # the trainer records one total for all peers
        return compute["train"], compute["train"]
    return max(per_peer.values(), default=0.0), sum(per_peer.values())


def print_round(title: str, stages: dict[str, float], compute: dict[str, float]) -> float:
    """Print one round's table; returns the plumbing share (upper bound)."""
    print(f"\n{title}\n")
    print(f"{'stage':<10}{'wall s':>9}{'compute s':>15}{'overhead s':>15}{'overhead':>16}")
    wall_total = low_total = high_total = 0.0
    for stage, keys in STAGE_COMPUTE.items():
        if stage not in stages:
            continue
        wall = stages[stage]
        most, total = stage_compute(compute, keys)
        total = min(total, wall)  # overlapping peers cannot compute longer than the stage ran
        wall_total, low_total, high_total = wall_total + wall, low_total + total, high_total + most
        span = f"{most:.1f}-{total:.1f}" if most != total else f"{total:.2f}"
        over = f"{wall - total:.1f}-{wall - most:.1f}" if most != total else f"{wall - total:.2f}"
        share = (
            f"{(wall - total) / wall:.1%}-{(wall - most) / wall:.1%}"
            if most != total
            else (f"{(wall - total) / wall:.1%}")
        )
        print(f"{stage:<10}{wall:>9.2f}{span:>15}{over:>15}{share:>16}")
    low, high = (wall_total - low_total) / wall_total, (wall_total - high_total) / wall_total
    print(f"{'round':<10}{wall_total:>9.2f}{'':>15}{'':>15}{f'{low:.1%}-{high:.1%}':>16}")
    return high


def existing_run(run_id: int) -> None:
    """The table for every self-training round of run ``run_id`` in the configured data dir."""
    import sqlalchemy as sa

    from dataflywheel.config import Settings
    from dataflywheel.db import embedded
    from dataflywheel.db.session import engine_from_settings

    settings = Settings()
    engine = engine_from_settings(settings)
    try:
        with engine.connect() as conn:
            rounds = conn.execute(
                sa.text(
                    "SELECT index, manifest FROM rounds WHERE run_id = :r AND index > 0 "
                    "AND manifest IS NOT NULL ORDER BY index"
                ),  # fmt: skip
                {"r": run_id},
            ).all()
    finally:
        engine.dispose()
        if not settings.database_url:
            embedded.stop(settings.embedded_pgdata)
    if not rounds:
        raise SystemExit(f"run {run_id}: no finished self-training round in {settings.data_dir}")
    for index, manifest in rounds:
        share = print_round(
            f"run {run_id} round {index}",
            manifest["stage_seconds"],
            manifest.get("compute_seconds", {}),
        )
        verdict = "met" if share <= 0.10 else "missed"
        print(f"plumbing share, upper bound: {share:.1%} (target <= 10%: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--run-id", type=int, help="measure an existing run instead")
    args = parser.parse_args()
    if args.run_id is not None:
        existing_run(args.run_id)
        return
    import sqlalchemy as sa

    from bench.local_stack import local_stack
    from dataflywheel.spec import RunSpec

    spec = RunSpec.model_validate(spec_dict(args.prompts, args.samples, args.steps))
    with local_stack() as engine:
        from flows.flywheel_run import flywheel_run

        start = time.perf_counter()
        run_id = flywheel_run(spec)
        wall = time.perf_counter() - start
        with engine.connect() as conn:
            manifest = conn.execute(
                sa.text("SELECT manifest FROM rounds WHERE run_id = :r AND index = 1"),
                {"r": run_id},
            ).scalar_one()

    share = print_round(
        f"round 1 of a run with {args.prompts} prompts x {args.samples} samples, "
        f"{args.steps} training steps (whole run {wall:.1f} s)",
        manifest["stage_seconds"],
        manifest.get("compute_seconds", {}),
    )
    verdict = "met" if share <= 0.10 else "missed"
    print(f"\nplumbing share of the round: {share:.1%} (target <= 10%: {verdict})")


if __name__ == "__main__":
    main()
