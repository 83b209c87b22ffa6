"""Generation on our actor vs Ray Data's LLM batch processor, two rounds each.

Runs in: a plain process (the Ray driver) on the benchmark machine; it starts its own local
Ray (``num_cpus=2``, no dashboard) in a temporary directory and stops it at the end.

What it measures, with the same tiny Llama (``training/tiny.py``, char tokenizer, head_dim 32),
the same chat-templated prompts as ``bench/generation.py``, the same seeded sampling (one
seed per request, temperature 1), float32 and the same vLLM engine settings on every path:

* **ours** — a ``GeneratorWorker`` actor with the vLLM backend, made ready as the
  generate stage does (load from the object store + the 1-token probe, via
  ``workers/driver/health.py``), then ``generate_timed`` over shards with two in flight
  (``ray.wait`` backpressure). Round 2 loads a new checkpoint (same shapes, new weights:
  seed 1): an in-place weight reload in the live engine.
* **processor** — ``ray.data.llm.build_processor(vLLMEngineProcessorConfig(...))`` over a
  dataset of the same rows. Its LLM stage asks for ``{"GPU": 1}`` unless given a
  ``placement_group_config``; with the default it never schedules on a CPU-only cluster (the
  script prints that resource request; docs/benchmarks.md quotes the pending dataset's
  warnings). Measured with ``placement_group_config={"bundles": [{"CPU": 1}]}``. The
  prompts arrive rendered, so its chat-template/tokenize/detokenize stages are off: vLLM
  tokenizes and detokenizes inside the engine, as on our path (those stages are extra actor
  pools). Round 2 is a new processor on the new folder: a new
  engine.
* **map_batches** — the core of that processor without its wrapper: ``Dataset.map_batches``
  over an actor-class UDF (``concurrency=1``, 1 CPU) holding ``vllm.LLM`` (our
  ``VLLMBackend``). Round 2 again builds a new pipeline, hence a new engine.

Reported per path and round: wall seconds of the round (Ray Data: the whole pipeline, engine
start included, as a round pays it; ours: startup, then shards), generated tokens, tokens/s
over the round's wall and (ours) over the shards alone, and whether every completion equals
ours for the same request and seed.

    .venv/bin/python bench/ray_data_llm.py [--requests 256] [--shard 64] [--max-tokens 32]
        [--paths ours,processor,map_batches]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.generation import prompts  # noqa: E402
from dataflywheel.generation import GenerationRequest, SamplingConfig  # noqa: E402

MAX_LEN = 256  # tiny model context (TinyModelConfig.max_seq_len)
ENGINE_KWARGS = {
    # The settings VLLMBackend.load passes on CPU (generation/vllm_backend.py), so the three
    # paths run the same engine.
    "dtype": "float32",
    "enforce_eager": True,
    "seed": 0,
    "disable_log_stats": True,
    "max_model_len": MAX_LEN,
    "enable_chunked_prefill": False,
    "max_num_batched_tokens": 8192,
}
STALL_S, PROBE_S = 900.0, 600.0  # generous: the machine is shared


def _load() -> float:
    return os.getloadavg()[0]


# --- ours ---------------------------------------------------------------------------------


def run_ours(
    store_uri: str,
    keys: list[str],
    cache: Path,
    reqs: list[GenerationRequest],
    sampling: SamplingConfig,
    shard: int,
) -> list[dict[str, Any]]:
    """Both rounds on one long-lived GeneratorWorker, as tasks/generate.py drives it."""
    import ray

    from workers.driver import health
    from workers.generator import GeneratorWorker

    shards = [reqs[i : i + shard] for i in range(0, len(reqs), shard)]
    out: list[dict[str, Any]] = []
    start = time.perf_counter()
    actor = GeneratorWorker.options(num_cpus=1, max_restarts=0).remote(
        "vllm", store_uri, {}, str(cache), {"max_model_len": MAX_LEN, "kv_cache_gib": 1}
    )
    for rnd, key in enumerate(keys, start=1):
        load_before = _load()
        t0 = time.perf_counter()
        health.ready(actor, key, sampling.dtype, STALL_S, PROBE_S)  # load + 1-token probe
        startup = time.perf_counter() - (start if rnd == 1 else t0)
        t1 = time.perf_counter()
        texts: dict[int, str] = {}
        tokens, compute = 0, 0.0
        queue, in_flight = list(range(len(shards))), {}
        while queue or in_flight:
            while queue and len(in_flight) < 2:  # as the generate stage: two per actor
                i = queue.pop(0)
                in_flight[actor.generate_timed.remote(shards[i], sampling)] = i
            done = health.wait(actor, list(in_flight), STALL_S, PROBE_S)
            completions, seconds = ray.get(done[0])
            in_flight.pop(done[0])
            compute += seconds
            for c in completions:  # here tasks/generate.py commits the shard's rows + ledger
                texts[c.prompt_id] = c.text
                tokens += c.completion_tokens
        gen = time.perf_counter() - t1
        out.append(
            {
                "path": "ours",
                "round": rnd,
                "startup_s": startup,
                "gen_s": gen,
                "wall_s": startup + gen,
                "tokens": tokens,
                "texts": texts,
                "compute_s": compute,
                "load": (load_before, _load()),
            }
        )
    ray.get(actor.close.remote())
    ray.kill(actor)
    return out


# --- Ray Data -----------------------------------------------------------------------------


def _rows(reqs: list[GenerationRequest]) -> list[dict[str, Any]]:
    return [{"rid": r.prompt_id, "seed": r.seed, "prompt": r.prompt} for r in reqs]


def make_processor(model_dir: Path, sampling: SamplingConfig, batch: int, cpu: bool) -> Any:
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    config = vLLMEngineProcessorConfig(
        model_source=str(model_dir),
        engine_kwargs=dict(ENGINE_KWARGS),
        batch_size=batch,
        concurrency=1,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        log_engine_metrics=False,
        # Without this the LLM stage requests {"GPU": 1} per engine (vllm_engine_stage.py).
        placement_group_config={"bundles": [{"CPU": 1}]} if cpu else None,
    )
    params = {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "n": 1,
    }
    return build_processor(
        config,
        preprocess=lambda row: {
            "prompt": row["prompt"],
            "sampling_params": {**params, "seed": int(row["seed"])},
        },
        postprocess=lambda row: {
            "rid": row["rid"],
            "text": row["generated_text"],
            "tokens": row["num_generated_tokens"],
            # Seconds this request spent in the engine; all batches are in flight at once
            # (max_concurrent_batches=8), so the largest is about the generate span.
            "engine_s": row["time_taken_llm"],
        },
    )


def llm_stage_request(model_dir: Path, sampling: SamplingConfig, batch: int) -> dict[str, Any]:
    """The Ray resources the default processor's LLM stage asks for, per engine replica."""
    proc = make_processor(model_dir, sampling, batch, cpu=False)
    stage = list(proc.stages.values())[-1]
    kw = stage.map_batches_kwargs
    return {k: kw[k] for k in ("num_cpus", "num_gpus", "resources", "accelerator_type") if k in kw}


class _VLLMUDF:
    """map_batches actor: one vllm.LLM (our VLLMBackend, same engine settings)."""

    def __init__(self, model_dir: str, sampling: SamplingConfig) -> None:
        from dataflywheel.generation.vllm_backend import VLLMBackend

        start = time.perf_counter()
        self.sampling = sampling
        self.backend = VLLMBackend(max_model_len=MAX_LEN, kv_cache_gib=1)
        self.backend.load(Path(model_dir), sampling.dtype)
        self.init_s = time.perf_counter() - start

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        reqs = [
            GenerationRequest(int(r), 0, int(s), str(p))
            for r, s, p in zip(batch["rid"], batch["seed"], batch["prompt"], strict=True)
        ]
        start = time.perf_counter()
        done = self.backend.generate(reqs, self.sampling)
        took = time.perf_counter() - start
        return {
            "rid": [c.prompt_id for c in done],
            "text": [c.text for c in done],
            "tokens": [c.completion_tokens for c in done],
            "engine_s": [took] * len(done),
            "init_s": [self.init_s] * len(done),
        }


def run_ray_data(
    path: str,
    model_dirs: list[Path],
    reqs: list[GenerationRequest],
    sampling: SamplingConfig,
    batch: int,
) -> list[dict[str, Any]]:
    """One pipeline per round (each builds its own engine); rows streamed to the driver."""
    import ray
    import ray.data

    out: list[dict[str, Any]] = []
    for rnd, model_dir in enumerate(model_dirs, start=1):
        load_before = _load()
        start = time.perf_counter()
        ds = ray.data.from_items(_rows(reqs))
        if path == "processor":
            ds = make_processor(model_dir, sampling, batch, cpu=True)(ds)
        else:
            ds = ds.map_batches(
                _VLLMUDF,
                fn_constructor_args=(str(model_dir), sampling),
                batch_size=batch,
                concurrency=1,  # the form measured; Ray 2.60 logs a deprecation warning
                num_cpus=1,
            )
        texts: dict[int, str] = {}
        tokens, first, engine_s, call_s, init_s = 0, None, 0.0, 0.0, None
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            first = first if first is not None else time.perf_counter() - start
            for rid, text, n in zip(b["rid"], b["text"], b["tokens"], strict=True):
                texts[int(rid)] = str(text)
                tokens += int(n)
            engine_s = max(engine_s, float(max(b["engine_s"])))
            if path == "map_batches":  # one call per batch, run one after another
                call_s += float(b["engine_s"][0])
                init_s = float(b["init_s"][0])
        wall = time.perf_counter() - start
        out.append(
            {
                "path": path,
                "round": rnd,
                "wall_s": wall,
                "first_batch_s": first,
                "gen_s": call_s if path == "map_batches" else engine_s,
                "init_s": init_s,
                "tokens": tokens,
                "texts": texts,
                "load": (load_before, _load()),
            }
        )
    return out


# --- driver -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--shard", type=int, default=64, help="shard / Ray Data batch size")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--paths", default="ours,processor,map_batches")
    args = parser.parse_args()
    paths = args.paths.split(",")
    # Inherited by the raylet and so by every worker and engine process it starts.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "3600")

    import ray
    import ray.data

    from dataflywheel.store import open_store
    from dataflywheel.training.tiny import TinyModelConfig, build_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-rdllm-") as tmp:
        work = Path(tmp)
        cfg = TinyModelConfig(max_seq_len=MAX_LEN)
        # Round 1 and round 2 checkpoints: same shapes and tokenizer, different weights.
        dirs = [build_tiny_model(cfg, work / f"round{k}", seed=k - 1) for k in (1, 2)]
        store = open_store(str(work / "objects"))
        keys = [store.put_tree(d).key for d in dirs]
        texts = prompts(dirs[0], args.requests)
        reqs = [GenerationRequest(i, 0, 1000 + i, t) for i, t in enumerate(texts)]
        sampling = SamplingConfig(args.temperature, 1.0, args.max_tokens, dtype="float32")

        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(work / "ray")
        )
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        results: list[dict[str, Any]] = []
        try:
            request = llm_stage_request(dirs[0], sampling, args.shard)
            if "ours" in paths:
                results += run_ours(
                    str(work / "objects"), keys, work / "cache", reqs, sampling, args.shard
                )
            for path in ("processor", "map_batches"):
                if path in paths:
                    results += run_ray_data(path, dirs, reqs, sampling, args.shard)
        finally:
            ray.shutdown()

    print(
        f"\nrequests={args.requests} shard/batch={args.shard} max_tokens={args.max_tokens} "
        f"temperature={args.temperature} seeds=per request, dtype=float32, tiny Llama"
    )
    print(f"default processor LLM stage asks for: {request}")
    ref = {r["round"]: r["texts"] for r in results if r["path"] == "ours"}
    print(
        f"{'path':<13}{'round':>6}{'wall s':>9}{'startup s':>11}{'tokens':>8}"
        f"{'tok/s':>8}{'same as ours':>14}{'load avg':>12}"
    )
    for r in results:
        tok_s = r["tokens"] / r["wall_s"]
        startup = r.get("startup_s", r.get("first_batch_s"))
        same = "-"
        if r["round"] in ref and r["path"] != "ours":
            mine = ref[r["round"]]
            same = f"{sum(r['texts'].get(k) == v for k, v in mine.items())}/{len(mine)}"
        lo = f"{r['load'][0]:.1f}/{r['load'][1]:.1f}"
        print(
            f"{r['path']:<13}{r['round']:>6}{r['wall_s']:>9.1f}{startup:>11.1f}"
            f"{r['tokens']:>8}{tok_s:>8.1f}{same:>14}{lo:>12}"
        )
    for r in results:
        if r["path"] == "ours":
            print(
                f"ours round {r['round']}: shards {r['gen_s']:.1f} s wall "
                f"({r['tokens'] / r['gen_s']:.1f} tok/s), {r['compute_s']:.1f} s in the backend"
            )
        elif r["path"] == "processor":
            print(
                f"processor round {r['round']}: longest request in the engine "
                f"{r['gen_s']:.1f} s ({r['tokens'] / r['gen_s']:.1f} tok/s over it)"
            )
        else:
            print(
                f"map_batches round {r['round']}: UDF init (engine start) {r['init_s']:.1f} s, "
                f"generate calls {r['gen_s']:.1f} s ({r['tokens'] / r['gen_s']:.1f} tok/s)"
            )
    print(
        "startup s: ours = actor + engine + probe (round 1) or in-place reload + probe "
        "(round 2); Ray Data = pipeline start to first batch (engine start included)"
    )
    by = {(r["path"], r["round"]): r["wall_s"] for r in results}
    for path in ("processor", "map_batches"):
        for rnd in (1, 2):
            if (path, rnd) in by and ("ours", rnd) in by:
                print(
                    f"{path} / ours, round {rnd} wall: {by[(path, rnd)] / by[('ours', rnd)]:.2f}x"
                )
    print(f"host: {os.cpu_count()} CPUs visible; load average now {_load():.1f}")


if __name__ == "__main__":
    main()
