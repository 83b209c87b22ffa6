"""How much of a round is plumbing: per-stage wall time vs the model work inside it.

Runs a real run (tiny model, transformers backend, embedded PostgreSQL, local store, local
Ray, a local Prefect server; a labelled warm-up, then self-training rounds) and reads back
what each round recorded: ``stage_seconds`` (wall time of each stage as the flow saw it) and
``compute_seconds`` (time spent inside the model backend, the trainer and the verifiers, and
loading models into the generators, measured where that code ran). The rest — database,
object store, Prefect task machinery, Ray scheduling and transfers — is plumbing.

Model loading (``load_*``: fetching the checkpoint from the store and building the engine
on it) is shown in a column of its own, and the share is printed both ways: with loading as
model work and with loading as plumbing. Round 1 also pays for the run's start-up (the
generator actor's process and imports, the base model's evaluation); later rounds show the
steady state.

Target: plumbing ≤ 10% of the round.

    .venv/bin/python bench/round_overhead.py [--prompts 500] [--samples 8] [--steps 150]
                                             [--rounds 2] [--warmup-steps 300]
    FLYWHEEL_DATA_DIR=DIR .venv/bin/python bench/round_overhead.py --run-id N

The second form reads every self-training round of a run that already exists (e.g. one of
the examples, a real workload) instead of running a small one. With peer models
(``training.peers``) each peer's compute is recorded separately and their generate and
train tasks may overlap in time, so the compute inside a stage lies between the largest
peer's share (peers fully in parallel) and the sum (one after the other): the table prints
the plumbing for both bounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# compute_seconds keys (or their prefixes: a peer's keys end in _peer1, ...) of each stage's
# model compute, and of the model loads inside it
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
STAGE_LOAD = {
    "generate": ("load_generate_train",),
    "evaluate": ("load_generate_eval", "load_generate_baseline"),
}


def spec_dict(prompts: int, samples: int, steps: int, rounds: int, warmup_steps: int) -> dict:
    return {
        "name": "bench-round-overhead",
        "seed": 5,
        "rounds": rounds,
        "model": {"source": "builtin:tiny-llama", "tiny": {"max_seq_len": 32}},
        "prompts": {
            "kind": "builtin",
            "family": "addition",
            "reversed_digits": True,
            "min_difficulty": 2,
            "max_difficulty": 4,
            "num_prompts": prompts,
        },
        # Without it the untrained model agrees on nothing: round 1 would train nothing and
        # be all generation, which flatters the ratio.
        "warmup": {"num_prompts": 1000, "max_steps": warmup_steps, "learning_rate": 0.001},
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


def _span(low: float, high: float, fmt: str) -> str:
    return f"{low:{fmt}}" if abs(low - high) < 5e-3 else f"{low:{fmt}}-{high:{fmt}}"


def print_round(
    title: str, stages: dict[str, float], compute: dict[str, float]
) -> tuple[float, float]:
    """Print one round's table; returns the plumbing share (upper bound over the peers'
    overlap) with model loading counted as model work, and counted as plumbing."""
    print(f"\n{title}\n")
    header = ("stage", "wall s", "compute s", "load s", "plumbing s", "plumbing")
    print(f"{header[0]:<10}" + "".join(f"{h:>14}" for h in header[1:]))
    # low: the peers' work one after the other (sums); high: side by side (the largest)
    wall_total = low_total = high_total = load_low = load_high = 0.0
    for stage, keys in STAGE_COMPUTE.items():
        if stage not in stages:
            continue
        wall = stages[stage]
        most, total = stage_compute(compute, keys)
        load_most, load_sum = stage_compute(compute, STAGE_LOAD.get(stage, ()))
        # overlapping peers cannot work longer than the stage ran
        load_sum = min(load_sum, wall)
        total = min(total, wall - load_sum)
        low_over, high_over = wall - load_sum - total, wall - load_most - most
        wall_total += wall
        low_total, high_total = low_total + total, high_total + most
        load_low, load_high = load_low + load_sum, load_high + load_most
        share = _span(low_over / wall, high_over / wall, ".1%") if wall else "-"
        print(
            f"{stage:<10}{wall:>14.2f}{_span(most, total, '.2f'):>14}"
            f"{_span(load_most, load_sum, '.2f'):>14}"
            f"{_span(low_over, high_over, '.2f'):>14}{share:>14}"
        )
    low = (wall_total - load_low - low_total) / wall_total
    high = (wall_total - load_high - high_total) / wall_total
    with_load = (wall_total - high_total) / wall_total
    print(
        f"{'round':<10}{wall_total:>14.2f}{_span(high_total, low_total, '.2f'):>14}"
        f"{_span(load_high, load_low, '.2f'):>14}{'':>14}{_span(low, high, '.1%'):>14}"
    )
    print(f"plumbing share with model loading counted as plumbing: {with_load:.1%}")
    return high, with_load


def verdict(share: float) -> str:
    return "met" if share <= 0.10 else "missed"


def report_rounds(rounds: list[tuple[int, dict]], title: str) -> None:
    """One table per round from ``(index, manifest)`` pairs, each with its verdicts."""
    for index, manifest in rounds:
        share, with_load = print_round(
            f"{title} round {index}",
            manifest["stage_seconds"],
            manifest.get("compute_seconds", {}),
        )
        print(
            f"round {index}: plumbing {share:.1%} with loading as model work "
            f"(target <= 10%: {verdict(share)}), {with_load:.1%} with loading as plumbing "
            f"({verdict(with_load)})"
        )


def read_rounds(engine: object, run_id: int) -> list[tuple[int, dict]]:
    """``(index, manifest)`` of every finished self-training round of the run."""
    import sqlalchemy as sa

    with engine.connect() as conn:  # type: ignore[attr-defined]
        return [
            (index, manifest)
            for index, manifest in conn.execute(
                sa.text(
                    "SELECT index, manifest FROM rounds WHERE run_id = :r AND index > 0 "
                    "AND manifest IS NOT NULL ORDER BY index"
                ),  # fmt: skip
                {"r": run_id},
            )
        ]


def existing_run(run_id: int) -> None:
    """The table for every self-training round of run ``run_id`` in the configured data dir."""
    from dataflywheel.config import Settings
    from dataflywheel.db import embedded
    from dataflywheel.db.session import engine_from_settings

    settings = Settings()
    engine = engine_from_settings(settings)
    try:
        rounds = read_rounds(engine, run_id)
    finally:
        engine.dispose()
        if not settings.database_url:
            embedded.stop(settings.embedded_pgdata)
    if not rounds:
        raise SystemExit(f"run {run_id}: no finished self-training round in {settings.data_dir}")
    report_rounds(rounds, f"run {run_id}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--run-id", type=int, help="measure an existing run instead")
    args = parser.parse_args()
    if args.run_id is not None:
        existing_run(args.run_id)
        return
    from bench.local_stack import local_stack
    from dataflywheel.spec import RunSpec

    spec = RunSpec.model_validate(
        spec_dict(args.prompts, args.samples, args.steps, args.rounds, args.warmup_steps)
    )
    with local_stack() as engine:
        from flows.flywheel_run import flywheel_run

        start = time.perf_counter()
        run_id = flywheel_run(spec)
        wall = time.perf_counter() - start
        rounds = read_rounds(engine, run_id)
    report_rounds(
        rounds,
        f"{args.prompts} prompts x {args.samples} samples, {args.steps} training steps "
        f"(whole run with a {args.warmup_steps}-step warm-up: {wall:.1f} s):",
    )


if __name__ == "__main__":
    main()
