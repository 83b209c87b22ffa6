"""Hybrid engine on CPU: a run whose generator actors also train, against the same run with
training tasks of their own (``resources.train_in_generator``).

Runs the spec twice with the `flywheel` CLI as a user does, in one fresh data directory
(embedded PostgreSQL, local store, the local Ray and Prefect server the CLI starts), first
with ``train_in_generator: false`` (a Ray task trains each peer), then with the default
(each peer's generator actor builds its base model and trains). It prints each command's
wall time, the time until the first round began (start-up: Ray, the actors' imports, the
base model) and the ratio, and checks with ``flywheel diff`` that every round of the two
runs is identical but for the spec hash (which includes the setting): where training runs
must not change a byte.

    .venv/bin/python bench/hybrid_engine.py [--spec examples/arithmetic-selfimprove.yaml]
                                            [--keep DIR]

Without ``--spec``: the tiny two-peer spec of the end-to-end tests (warm-up + 2 rounds).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FLYWHEEL = [sys.executable, "-m", "dataflywheel.cli"]

TINY = {
    "name": "bench-hybrid",
    "seed": 11,
    "rounds": 2,
    "model": {
        "source": "builtin:tiny-llama",
        "tiny": {"hidden_size": 64, "num_layers": 1, "num_heads": 2,
                 "intermediate_size": 128, "max_seq_len": 32},
    },
    "prompts": {"kind": "builtin", "family": "addition", "min_difficulty": 2,
                "max_difficulty": 2, "num_prompts": 12},
    "warmup": {"num_prompts": 48, "max_steps": 20, "learning_rate": 0.003},
    "generation": {"backend": "transformers", "samples_per_prompt": 3, "temperature": 0.0,
                   "max_tokens": 6},
    "verification": {"verifiers": [
        {"name": "exact_answer", "extract": "full", "strict": True},
        {"name": "majority_vote", "extract": "full", "min_agreement": 0.3},
    ]},
    "selection": {"recipe": "majority_vote", "min_agreement": 0.3},
    "training": {"method": "sft", "mode": "full", "learning_rate": 0.001, "max_steps": 5,
                 "batch_size": 8, "peers": 2, "replay_share": 0.25, "labelled_share": 0.25},
    "evaluation": {"metrics": ["accuracy"], "primary": "accuracy", "verifier": "exact_answer",
                   "num_prompts": 10, "samples_per_prompt": 1, "temperature": 0.0},
    "promotion": {"max_drop": 1.0},
}  # fmt: skip


def _run(env: dict[str, str], spec: Path) -> tuple[int, float, float]:
    """(run id, wall seconds, seconds until the first round's flow began)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [*FLYWHEEL, "run", str(spec)], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    first_round = None
    assert proc.stderr is not None
    for line in proc.stderr:
        if first_round is None and "Beginning subflow run" in line:
            first_round = time.monotonic() - started
    out = proc.stdout.read() if proc.stdout else ""
    if proc.wait() != 0:
        raise SystemExit(f"flywheel run {spec} failed (exit {proc.returncode})")
    return int(out.strip().splitlines()[-1]), time.monotonic() - started, first_round or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, help="a spec file (default: the tiny 2-peer one)")
    parser.add_argument("--keep", type=Path, help="data directory to use and keep")
    args = parser.parse_args()
    base = yaml.safe_load(args.spec.read_text()) if args.spec else copy.deepcopy(TINY)
    data = args.keep or Path(tempfile.mkdtemp(prefix="bench-hybrid-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "PREFECT_"))}
    env["FLYWHEEL_DATA_DIR"] = str(data / "data")
    specs = {}
    for name, hybrid in (("task", False), ("generator", True)):
        spec = copy.deepcopy(base)
        spec.setdefault("resources", {})["train_in_generator"] = hybrid
        specs[name] = data / f"spec-{name}.yaml"
        specs[name].write_text(yaml.safe_dump(spec))
    try:
        # A first command starts PostgreSQL and Prefect for the data directory: not timed.
        subprocess.run([*FLYWHEEL, "db", "url"], cwd=ROOT, env=env, check=True,
                       capture_output=True)  # fmt: skip
        results = {name: _run(env, path) for name, path in specs.items()}
        identical = []
        for index in range(0 if "warmup" in base else 1, int(base.get("rounds", 1)) + 1):
            out = subprocess.run(
                [*FLYWHEEL, "diff", f"{results['task'][0]}:{index}",
                 f"{results['generator'][0]}:{index}", "--json"],
                cwd=ROOT, env=env, capture_output=True, text=True,
            )  # fmt: skip
            # The spec hash differs by the setting itself; every other field must not.
            fields = json.loads(out.stdout)["fields"]
            identical.append(all(f["same"] for f in fields if f["field"] != "spec_hash"))
        print(f"{'training in':<22}{'run':>5}{'wall s':>9}{'start-up s':>12}")
        for name, (run_id, wall, first) in results.items():
            print(f"{name:<22}{run_id:>5}{wall:>9.1f}{first:>12.1f}")
        task, gen = results["task"], results["generator"]
        print(f"wall ratio generator/task: {gen[1] / task[1]:.2f}; "
              f"start-up ratio: {gen[2] / task[2]:.2f}")  # fmt: skip
        print(f"rounds identical: {identical}")
        if not all(identical):
            raise SystemExit("the two runs differ: training in the generator changed results")
    finally:
        subprocess.run([*FLYWHEEL, "down"], cwd=ROOT, env=env, capture_output=True)
        if args.keep is None:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
