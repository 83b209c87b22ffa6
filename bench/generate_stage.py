"""Our generate stage vs the raw backend call on the same requests: what the stage costs.

The stage is the real ``generate_samples`` Prefect task (tasks/generate.py): requests planned
from the spec, cut into shards recorded in the ledger, sent to the run's generator actor two
at a time (``ray.wait``), every shard's samples COPYed into PostgreSQL with its ledger mark.
The raw call is one ``generate_timed`` of the same backend, in the same actor (engine warm,
same model), over the same rendered requests: no shards, no database, no Prefect. Before
either, a warm-up stage (the baseline) starts the engine and loads the model, so neither
pays for that; the raw call runs once before and once after the stage (the ratio uses their
mean wall time), since a shared machine's load drifts. Both see the same sampling
parameters and per-request seeds, so they generate the same tokens (checked).

Target: stage throughput ≥ 0.9× the raw call's.

    .venv/bin/python bench/generate_stage.py [--backend vllm] [--prompts 1024] [--max-tokens 16]
    .venv/bin/python bench/generate_stage.py --spec examples/smollm2-star.yaml --prompts 128

Runs against its own embedded PostgreSQL, local store, local Ray and Prefect server in a
temporary directory. The model is the tiny Llama, or with ``--spec`` the spec's model,
prompts, generation settings (few-shot exemplars, chat template) and evaluation sampling:
the requests are the spec's held-out set, cut to ``--prompts``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def spec_dict(backend: str, prompts: int, max_tokens: int) -> dict:
    return {
        "name": "bench-generate-stage",
        "seed": 3,
        "rounds": 1,
        "model": {"source": "builtin:tiny-llama", "tiny": {"max_seq_len": 64}},
        "prompts": {
            "kind": "builtin",
            "family": "addition",
            "min_difficulty": 3,
            "max_difficulty": 3,
            "num_prompts": prompts,
        },
        "generation": {
            "backend": backend,
            "temperature": 1.0,
            "max_tokens": max_tokens,
            "dtype": "float32",
        },
        "evaluation": {
            "num_prompts": prompts,
            "min_difficulty": 3,
            "max_difficulty": 3,
            "samples_per_prompt": 1,
            "temperature": 1.0,
        },
    }


def spec_from_file(path: Path, prompts: int, backend: str | None) -> dict:
    """A one-round spec from ``path`` whose evaluation set is ``prompts`` prompts."""
    from dataflywheel.spec import load_spec

    data = load_spec(path).model_dump(mode="json", exclude_none=True)
    data["rounds"] = 1
    data["evaluation"]["num_prompts"] = prompts
    if backend is not None:
        data["generation"]["backend"] = backend
    return data


def raw_call(spec, run_id: int, round_id: int) -> tuple[float, int, list[str]]:
    """(wall seconds, generated tokens, texts) of one backend call over the eval requests,
    in the run's own generator actor."""
    import ray

    from dataflywheel.db.samples import register_prompts
    from dataflywheel.rounds import plan
    from tasks import context
    from tasks.generate import stage_prompts
    from workers.driver.ray_session import NAMESPACE

    with context.session() as session:
        refs = register_prompts(session, stage_prompts(spec, 0, "eval", plan.initial_band(spec)))
    requests = plan.requests(spec, 0, "eval", refs)
    prompt_format = plan.prompt_format(spec, "generate")
    actor = ray.get_actor(f"generator-run{run_id}-0", namespace=NAMESPACE)
    prompts = [r.prompt for r in requests]
    if prompt_format.needs_tokenizer:  # the chat template: the actor holds the tokenizer
        texts = ray.get(actor.render_prompts.remote(prompts, prompt_format))
    else:
        texts = prompt_format.render(prompts)
    requests = [replace(r, prompt=t) for r, t in zip(requests, texts, strict=True)]
    start = time.perf_counter()
    completions, _ = ray.get(actor.generate_timed.remote(requests, plan.sampling(spec, "eval")))
    wall = time.perf_counter() - start
    tokens = sum(c.completion_tokens for c in completions)
    return wall, tokens, [c.text for c in sorted(completions, key=lambda c: c.prompt_id)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["vllm", "transformers"], default=None)
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--spec", type=Path, help="a run spec whose model and prompts to use")
    args = parser.parse_args()

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import sqlalchemy as sa

    from bench.local_stack import local_stack
    from dataflywheel.spec import RunSpec

    if args.spec is not None:
        spec = RunSpec.model_validate(spec_from_file(args.spec, args.prompts, args.backend))
        model = args.spec.stem
    else:
        spec = RunSpec.model_validate(
            spec_dict(args.backend or "vllm", args.prompts, args.max_tokens)
        )
        model = "tiny Llama"
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    with local_stack() as engine:
        from tasks.generate import generate_samples
        from tasks.rounds import start_round
        from tasks.runs import prepare_base_model, register_run

        run_id = register_run(spec)
        base = prepare_base_model(run_id)
        round_id = start_round(run_id, 0)
        start = time.perf_counter()
        generate_samples(round_id, "baseline", base)  # warm-up: engine start, model load
        warm = time.perf_counter() - start
        # Raw, stage, raw: the machine's load drifts, so the raw call brackets the stage.
        raw_before, tokens, raw_texts = raw_call(spec, run_id, round_id)
        start = time.perf_counter()
        generated = generate_samples(round_id, "eval", base)
        stage = time.perf_counter() - start
        raw_after, _, _ = raw_call(spec, run_id, round_id)
        raw = (raw_before + raw_after) / 2
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT s.text, s.completion_tokens FROM samples s WHERE s.round_id = :r "
                    "AND s.purpose = 'eval' ORDER BY s.prompt_id"
                ),
                {"r": round_id},
            ).all()

    stage_tokens = sum(r[1] for r in rows)
    same = sum(a == b for a, b in zip((r[0] for r in rows), raw_texts, strict=False))
    gen = spec.generation
    print(f"\n{gen.backend}, {model}, {generated} requests, <= {gen.max_tokens} new tokens")
    print(f"warm-up stage (engine start + load + baseline): {warm:.1f} s")
    print(f"{'':<22}{'wall s':>9}{'tokens':>9}{'tok/s':>9}")
    for name, seconds in (("raw call, before", raw_before), ("raw call, after", raw_after)):
        print(f"{name:<22}{seconds:>9.2f}{tokens:>9}{tokens / seconds:>9.1f}")
    print(f"{'generate stage':<22}{stage:>9.2f}{stage_tokens:>9}{stage_tokens / stage:>9.1f}")
    ratio = (stage_tokens / stage) / (tokens / raw)  # against the two raw calls' mean
    verdict = "met" if ratio >= 0.9 else "missed"
    print(f"\nstage / raw throughput: {ratio:.2f}x (target >= 0.9x: {verdict})")
    print(f"same text from both for {same}/{len(rows)} requests")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
