"""What Ray Train costs per checkpoint beyond the training itself, vs a plain Ray task.

A run trains one checkpoint per peer per round. ``workers/trainer.py`` has two ways to do it:
``train_checkpoint`` (a plain Ray task; Ray keeps its worker process, with torch and TRL
imported, from call to call) and ``train_distributed`` (a ``TorchTrainer``: a controller
actor, a placement group and fresh worker processes for every ``fit()``). This bench trains
the tiny Llama the same way through both, ``--fits`` times each in one Ray, and prints for
every call its wall time, the trainer's own seconds (model load → saved folder, measured
inside) and the difference: start-up, imports, transfers and tear-down. It also times a
``TorchTrainer`` whose loop returns at once (the framework alone).

The figures decide ``workers/driver/placement.distributed_training`` (Ray Train only for
more than one worker); there is no target.

    .venv/bin/python bench/ray_train_startup.py [--fits 3] [--steps 20]

Runs its own local Ray (2 CPUs) and a local object store in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bare_fit() -> tuple[float, float]:
    """(seconds from the driving task to the loop's first line, seconds after it)."""
    import ray

    @ray.remote(num_cpus=0)
    def drive() -> tuple[float, float, float]:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        started = time.time()
        result = TorchTrainer(
            lambda: time.time(),
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
            run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="bench-raytrain-")),
        ).fit()
        return started, result.return_value, time.time()

    started, in_loop, done = ray.get(drive.remote())
    return in_loop - started, done - in_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import ray

    from dataflywheel.store import LocalStore
    from dataflywheel.training import TrainConfig
    from dataflywheel.training.tiny import TinyModelConfig
    from workers.bootstrap import build_base_model
    from workers.trainer import train_checkpoint, train_distributed

    tmp = Path(tempfile.mkdtemp(prefix="bench-raytrain-"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    store = LocalStore(tmp / "objects")
    tiny = TinyModelConfig(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256)
    base_key, _ = ray.get(build_base_model.remote(store.uri, {}, tiny, 0))
    rows = [{"prompt": f"{a}+{a}=", "completion": str(2 * a)} for a in range(64)]
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = TrainConfig(
        method="sft", mode="full", learning_rate=1e-3, batch_size=8, seed=0, max_steps=args.steps
    )
    call = (store.uri, {}, base_key, store.put_file(data).key, config, "sft", None)
    one = {"num_workers": 1, "use_gpu": False, "resources_per_worker": {"CPU": 1}}
    paths = {
        "plain task": lambda: train_checkpoint.options(num_cpus=1).remote(*call),
        "Ray Train, 1 worker": lambda: train_distributed.options(num_cpus=0).remote(*call, one),
    }
    print(f"\n{'path':<22}{'fit':>4}{'wall s':>10}{'trainer s':>12}{'rest s':>10}")
    for name, submit in paths.items():
        for fit in range(1, args.fits + 1):
            start = time.perf_counter()
            outcome = ray.get(submit())
            wall = time.perf_counter() - start
            inside = outcome.result.seconds
            print(f"{name:<22}{fit:>4}{wall:>10.1f}{inside:>12.1f}{wall - inside:>10.1f}")
    for fit in range(1, 3):
        before, after = bare_fit()
        print(f"empty TorchTrainer fit {fit}: {before:.1f} s to the loop, {after:.1f} s after it")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
