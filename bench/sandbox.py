"""Benchmark: sandboxed code verification vs an unsandboxed subprocess, in the same run.

Runs in: a developer shell (not a test). Two workloads, each verified twice per sample:

- *sandboxed*: the ``code_tests`` verifier (bubblewrap + unprivileged uid + rlimits, one
  harness per sample, each test step in two forked children, the tests' and the
  candidate's, verdict decided outside the candidate's);
- *plain*: what an unsandboxed harness does, ``python3 -I -S -c <program + tests + check>``
  in a plain subprocess, verdict = exit status 0 (no isolation, forgeable).

Workloads: a trivial passing program (``def f(): return 1`` and one assert), and the 164
HumanEval canonical solutions. Sandboxed and plain runs alternate sample by sample so that load
from other jobs on the shared cores hits both alike. Prints verifications/s for each, the
per-sample overhead of the sandbox (mean, and median of the sample-by-sample differences;
target: mean ≤ 50 ms) and the load average, and with ``--workers 2`` the same at two
verifications at a time.

    .venv/bin/python bench/sandbox.py [--trivial 200] [--humaneval 164] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date

from dataflywheel.prompts import Prompt
from dataflywheel.prompts.humaneval import canonical_program, load_humaneval
from dataflywheel.verifiers import build
from dataflywheel.verifiers.sandbox import SandboxConfig
from dataflywheel.verifiers.sandbox.supervisor import UID_BASE, build_command

TARGET_OVERHEAD_MS = 50.0
TRIVIAL = Prompt(
    "bench",
    "eval",
    "def f():",
    reference={"entry_point": "f"},
    tests="def check(candidate):\n    assert candidate() == 1\n",
)


def plain(program: str, prompt: Prompt, python: str) -> bool:
    source = f"{program}\n\n{prompt.tests}\n\ncheck({prompt.reference['entry_point']})\n"
    done = subprocess.run(
        [python, "-I", "-S", "-c", source], capture_output=True, timeout=30, check=False
    )
    return done.returncode == 0


def measure(items: list[tuple[str, Prompt]], workers: int) -> dict[str, float]:
    """Rates and latencies of the sandboxed and the plain runs (wall clock)."""
    verifier = build({"name": "code_tests", "program": "completion"})
    python = SandboxConfig().python
    s_lat: list[float] = []
    p_lat: list[float] = []

    def one(item: tuple[str, Prompt]) -> tuple[float, float]:
        program, prompt = item
        start = time.perf_counter()
        score = verifier.score(program, prompt)
        middle = time.perf_counter()
        ok = plain(program, prompt, python)
        end = time.perf_counter()
        if not (score.passed and ok):
            raise SystemExit(f"{prompt.describe()}: sandboxed {score.reason}, plain {ok}")
        return middle - start, end - middle

    with ThreadPoolExecutor(max_workers=workers) as pool:
        start = time.perf_counter()
        for s, p in pool.map(one, items):
            s_lat.append(s)
            p_lat.append(p)
        wall = time.perf_counter() - start
    # Runs alternate, so the wall clock is shared: split it by each side's share of latency.
    share = sum(s_lat) / (sum(s_lat) + sum(p_lat))
    n = len(items)
    return {
        "n": n,
        "s_rate": n / (wall * share),
        "p_rate": n / (wall * (1 - share)),
        "s_med": statistics.median(s_lat) * 1000,
        "p_med": statistics.median(p_lat) * 1000,
        "overhead": (sum(s_lat) - sum(p_lat)) / n * 1000,
        "overhead_med": statistics.median(s - p for s, p in zip(s_lat, p_lat, strict=True)) * 1000,
    }


def report(name: str, workers: int, r: dict[str, float]) -> None:
    verdict = "ok" if r["overhead"] <= TARGET_OVERHEAD_MS else "MISS"
    print(
        f"| {name} ({r['n']:.0f}, {workers} at a time) | {r['s_rate']:5.1f}/s | "
        f"{r['p_rate']:5.1f}/s | {r['s_med']:5.1f} / {r['p_med']:5.1f} ms "
        f"({r['s_med'] / r['p_med']:.1f}×) | {r['overhead']:5.1f} / {r['overhead_med']:5.1f} ms: "
        f"{verdict} |"
    )


def isolation_floor(runs: int = 50) -> tuple[float, float]:
    """Median ms of /usr/bin/true, and of it under the sandbox's bwrap + setpriv command."""
    command = build_command(SandboxConfig(), UID_BASE)
    wrapped = command[: command.index(SandboxConfig().python)] + ["/usr/bin/true"]
    times: dict[str, list[float]] = {"bare": [], "wrapped": []}
    for _ in range(runs):
        for key, argv in (("bare", ["/usr/bin/true"]), ("wrapped", wrapped)):
            start = time.perf_counter()
            subprocess.run(argv, check=True, env={})
            times[key].append((time.perf_counter() - start) * 1000)
    return statistics.median(times["bare"]), statistics.median(times["wrapped"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trivial", type=int, default=200, help="trivial samples")
    parser.add_argument("--humaneval", type=int, default=164, help="HumanEval problems (≤ 164)")
    parser.add_argument("--workers", type=int, default=1, help="verifications at a time")
    args = parser.parse_args()
    print(f"# bench/sandbox.py, {date.today()}, {platform.node()}, {os.cpu_count()} CPUs")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    bare, wrapped = isolation_floor()
    print(f"isolation layer alone: /usr/bin/true {bare:.1f} ms, under bwrap + setpriv "
          f"{wrapped:.1f} ms (+{wrapped - bare:.1f} ms)")  # fmt: skip
    print(
        "| workload | sandboxed | plain | median latency sandboxed / plain (ratio) "
        "| overhead per sample, mean / median of pairs (target: mean ≤ 50 ms) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    trivial = [("def f():\n    return 1\n", TRIVIAL)] * args.trivial
    report("trivial", args.workers, measure(trivial, args.workers))
    problems = load_humaneval()[: args.humaneval]
    humaneval = [(canonical_program(p), p) for p in problems]
    report("HumanEval canonical", args.workers, measure(humaneval, args.workers))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
