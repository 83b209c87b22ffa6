"""How a round's bookkeeping scales, and what each shard costs in orchestration.

Part 1 — per-sample bookkeeping at 1k, 10k and 100k samples. A stand-in backend answers
instantly (the reference for odd sample indices, a wrong number otherwise), so what is
measured is everything around the model, done with the same core calls the stage tasks
make: prompt upsert, ledger planning and per-shard marks, sample COPY per generation shard
(256), reading samples back, exact-answer scoring and score COPY per verification shard
(1024), reading candidates and scores back, rejection-sampling selection, the dataset file
into the store and its member rows. Target: per-sample cost at 100k within 1.2×
of 1k.

Part 2 — per-shard overhead of the orchestration: empty shards through a Ray actor with the
generate stage's backpressure (``ray.wait``, two in flight) plus the two ledger transactions
per shard; and, with ``PREFECT_API_URL`` set, a Prefect task call (stages are tasks, shards
are not). Target: under 100 ms per shard.

Part 3 — throughput with 1 and 2 workers on a local two-node Ray cluster (``ray start``
processes, 1 CPU each, ``tests/local_cluster.py``): generation by ``GeneratorWorker``
actors (the tiny Llama, transformers, greedy, shards of 256 with two in flight per actor),
one actor pinned to the head or one per node; verification by ``score_shard`` tasks (exact
answer + majority vote, shards of 1024), pinned to the head, one slot per node, or unpinned
as ``tasks/verify.py`` submits them (the figure then says how many nodes Ray used).

    .venv/bin/python bench/scaling.py [--sizes 1000,10000,100000] [--shards 200]
        [--parts bookkeeping,shards,cluster] [--gen-samples 4096] [--verify-samples 65536]

Runs against its own embedded PostgreSQL, local store and Ray in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from dataflywheel import recipes  # noqa: E402
from dataflywheel.db import checkpoints, embedded, ingest, migrate, queries  # noqa: E402
from dataflywheel.db.models import Sample, Score  # noqa: E402
from dataflywheel.db.session import make_engine, session_scope  # noqa: E402
from dataflywheel.prompts import canonical_json, canonical_jsonl, sha256_hex  # noqa: E402
from dataflywheel.recipes.rejection import RejectionSamplingConfig  # noqa: E402
from dataflywheel.store import open_store  # noqa: E402
from dataflywheel.verifiers import Score as VerifierScore  # noqa: E402
from workers.verify import score_items  # noqa: E402

GEN_SHARD = 256  # tasks/generate.py SHARD_SIZE
VERIFY_SHARD = 1024  # dataflywheel/rounds/shards.py SAMPLES_PER_SHARD
SAMPLES_PER_PROMPT = 4
VERIFIERS = [{"name": "exact_answer", "extract": "full", "strict": True}]


def _round(engine: Any, label: str) -> tuple[int, int, int]:
    with session_scope(engine) as s:
        run = queries.create_run(s, name=label, spec={}, spec_hash="0" * 64)
        rnd = queries.ensure_round(s, run, 1, 7)
        ckpt = checkpoints.ensure_checkpoint(
            s, run_id=run, round_id=None, parent_id=None, status="base"
        )
    return run, rnd, ckpt


def bookkeeping(engine: Any, store: Any, n: int) -> dict[str, float]:
    """Seconds per stage for one round of ``n`` samples with an instant stand-in backend."""
    run, rnd, ckpt = _round(engine, f"scaling-{n}")
    t: dict[str, float] = defaultdict(float)
    rng = random.Random(n)
    start = time.perf_counter()
    pairs = [(rng.randrange(10**6), rng.randrange(10**6)) for _ in range(n // SAMPLES_PER_PROMPT)]
    rows = [
        ingest.PromptRow(
            prompt_set=f"scaling-{n}",
            split="train",
            text=f"{a}+{b}={i}",
            reference={"answer": str(a + b)},
        )
        for i, (a, b) in enumerate(pairs)
    ]
    with session_scope(engine) as s:
        ids = ingest.upsert_prompts(s, rows)
    prompts = [(ids[r.content_hash], r) for r in rows]
    t["prompts"] = time.perf_counter() - start

    # generate: plan the ledger, then per shard: mark running, "generate", samples + done.
    start = time.perf_counter()
    requests = [(pid, row, k) for pid, row in prompts for k in range(SAMPLES_PER_PROMPT)]
    shards = [requests[i : i + GEN_SHARD] for i in range(0, len(requests), GEN_SHARD)]
    digests = [sha256_hex(canonical_json([[p, k] for p, _, k in sh])) for sh in shards]
    with session_scope(engine) as s:
        queries.plan_shards(s, rnd, "generate_train", digests)
    params = {"temperature": 1.0, "backend": "stand-in"}
    for index, shard in enumerate(shards):
        with session_scope(engine) as s:
            queries.mark_shard(s, rnd, "generate_train", index, "running")
        samples = [
            ingest.SampleRow(
                round_id=rnd,
                prompt_id=pid,
                checkpoint_id=ckpt,
                sample_index=k,
                seed=k,
                text=row.reference["answer"] if k % 2 else "0",
                sampling_params=params,
            )
            for pid, row, k in shard
        ]
        with session_scope(engine) as s:
            ingest.insert_samples(s, samples)
            queries.mark_shard(s, rnd, "generate_train", index, "done", worker_node="local")
    t["generate"] = time.perf_counter() - start

    # verify: read back, shard by prompt, score (pure verifier), scores + done per shard.
    start = time.perf_counter()
    with session_scope(engine) as s:
        got = s.execute(
            sa.select(Sample.id, Sample.prompt_id, Sample.sample_index, Sample.text)
            .where(Sample.round_id == rnd)
            .order_by(Sample.prompt_id, Sample.sample_index)
        ).all()
    payload = {
        pid: {
            "prompt_set": r.prompt_set,
            "split": r.split,
            "text": r.text,
            "reference": r.reference,
        }
        for pid, r in prompts
    }
    vshards = [got[i : i + VERIFY_SHARD] for i in range(0, len(got), VERIFY_SHARD)]
    with session_scope(engine) as s:
        queries.plan_shards(s, rnd, "verify_train", [str(i) for i in range(len(vshards))])
    for index, shard in enumerate(vshards):
        with session_scope(engine) as s:
            queries.mark_shard(s, rnd, "verify_train", index, "running")
        items = [tuple(x) for x in shard]
        scored = score_items(VERIFIERS, {p: payload[p] for p in {x[1] for x in items}}, items)
        with session_scope(engine) as s:
            ingest.insert_scores(s, [ingest.ScoreRow(**row) for row in scored])
            queries.mark_shard(s, rnd, "verify_train", index, "done", worker_node="local")
    t["verify"] = time.perf_counter() - start

    # select: candidates and scores back, recipe, dataset file, members.
    start = time.perf_counter()
    with session_scope(engine) as s:
        scores: dict[int, dict[str, VerifierScore]] = defaultdict(dict)
        for x in s.execute(
            sa.select(Score)
            .join(Sample, Sample.id == Score.sample_id)
            .where(Sample.round_id == rnd)
        ).scalars():
            scores[x.sample_id][x.verifier] = VerifierScore(
                value=x.value,
                passed=x.passed,
                status=x.status,
                reason=x.reason or "",
                details=x.details,
            )
        candidates = [
            recipes.Candidate(
                sample_id=i, prompt_id=p, sample_index=k, text=text, answer=text, scores=scores[i]
            )
            for i, p, k, text in got
        ]
    result = recipes.select(candidates, RejectionSamplingConfig(max_per_prompt=2), seed=1)
    dataset_rows = [{"prompt_id": r.prompt_id, "completion": r.text} for r in result.rows]
    ref = store.put_bytes(canonical_jsonl(dataset_rows))
    with session_scope(engine) as s:
        checkpoints.ensure_dataset(
            s,
            run_id=run,
            round_id=rnd,
            name="train",
            kind="sft",
            recipe="rejection_sampling",
            recipe_config=None,
            digest=ref.digest,
            object_key=ref.key,
            row_count=len(result.rows),
            stats=result.stats.as_dict(),
            members=[
                {"position": i, "sample_id": r.sample_id, "prompt_id": r.prompt_id, "label": None}
                for i, r in enumerate(result.rows)
            ],
        )
    t["select"] = time.perf_counter() - start
    return dict(t)


def shard_overhead(engine: Any, shards: int) -> dict[str, float]:
    """Milliseconds per empty shard: Ray actor round trip with backpressure, plus ledger."""
    import ray

    @ray.remote(num_cpus=0)
    class Echo:
        def generate(self, shard: list[int]) -> list[int]:
            return shard

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actor = Echo.remote()
        ray.get(actor.generate.remote([]))
        _, rnd, _ = _round(engine, "shard-overhead")
        out = {}
        for ledger in (False, True):
            stage = f"noop_{int(ledger)}"
            if ledger:
                with session_scope(engine) as s:
                    queries.plan_shards(s, rnd, stage, [str(i) for i in range(shards)])
            start = time.perf_counter()
            queue, in_flight = list(range(shards)), {}
            while queue or in_flight:
                while queue and len(in_flight) < 2:
                    i = queue.pop(0)
                    if ledger:
                        with session_scope(engine) as s:
                            queries.mark_shard(s, rnd, stage, i, "running")
                    in_flight[actor.generate.remote([i])] = i
                done, _ = ray.wait(list(in_flight), num_returns=1)
                i = in_flight.pop(done[0])
                ray.get(done[0])
                if ledger:
                    with session_scope(engine) as s:
                        queries.mark_shard(s, rnd, stage, i, "done", worker_node="local")
            out["ray + ledger" if ledger else "ray only"] = (
                (time.perf_counter() - start) / shards * 1e3
            )
    finally:
        ray.shutdown()
    if os.environ.get("PREFECT_API_URL"):
        from prefect import flow, task

        @task
        def noop(i: int) -> int:
            return i

        @flow
        def many(n: int) -> float:
            start = time.perf_counter()
            for i in range(n):
                noop(i)
            return (time.perf_counter() - start) / n * 1e3

        out["prefect task call"] = many(min(shards, 50))
    return out


TINY_BENCH = {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "intermediate_size": 256}
VERIFY_BOTH = [*VERIFIERS, {"name": "majority_vote", "extract": "full", "min_agreement": 0.3}]


def _spread(submit: Any, slots: int, jobs: list[Any]) -> list[Any]:
    """Run ``submit(job, slot)`` for every job, at most two in flight per slot, the next job
    to whichever slot frees first (the stage tasks' backpressure); results in job order."""
    import ray

    results: list[Any] = [None] * len(jobs)
    queue, in_flight, load = list(range(len(jobs))), {}, [0] * slots
    while queue or in_flight:
        for slot in range(slots):
            while queue and load[slot] < 2:
                job = queue.pop(0)
                in_flight[submit(jobs[job], slot)] = (job, slot)
                load[slot] += 1
        done, _ = ray.wait(list(in_flight), num_returns=1)
        job, slot = in_flight.pop(done[0])
        load[slot] -= 1
        results[job] = ray.get(done[0])
    return results


def cluster_throughput(tmp: Path, gen_samples: int, verify_samples: int) -> dict[str, float]:
    """Samples/s (and tokens/s) of generation and verification with 1 and 2 workers."""
    import ray

    from dataflywheel.generation import GenerationRequest, SamplingConfig
    from dataflywheel.training.tiny import TinyModelConfig
    from workers.bootstrap import build_base_model
    from workers.generator import GeneratorWorker
    from workers.verify import score_shard

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test harness's home
    from tests.local_cluster import LocalCluster

    cluster = LocalCluster()
    saved = cluster.join_process()
    out: dict[str, float] = {}
    try:
        address = cluster.start_head(num_cpus=1, resources={"node_head": 1})
        cluster.add_node("second", num_cpus=1, resources={"node_second": 1})
        ray.init(address=address, namespace="flywheel-bench", log_to_driver=False)
        pins = [{"node_head": 0.001}, {"node_second": 0.001}]
        store_uri = str(tmp / "cluster-objects")
        model_key, _ = ray.get(
            build_base_model.remote(store_uri, {}, TinyModelConfig(**TINY_BENCH), 0)
        )
        rng = random.Random(0)
        requests = [
            GenerationRequest(i, 0, i, f"{rng.randrange(100)}+{rng.randrange(100)}=")
            for i in range(gen_samples)
        ]
        shards = [requests[i : i + GEN_SHARD] for i in range(0, len(requests), GEN_SHARD)]
        greedy = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=8)
        for workers in (1, 2):
            actors = [
                GeneratorWorker.options(num_cpus=1, resources=pins[k]).remote(
                    "transformers", store_uri, {}, str(tmp / "model-cache"), {"batch_size": 32}
                )
                for k in range(workers)
            ]
            ray.get([a.load.remote(model_key, "float32") for a in actors])
            ray.get([a.generate.remote(requests[:32], greedy) for a in actors])  # warm-up
            start = time.perf_counter()
            submit = lambda sh, k, a=actors: a[k].generate_timed.remote(sh, greedy)  # noqa: E731
            done = _spread(submit, workers, shards)
            seconds = time.perf_counter() - start
            tokens = sum(c.completion_tokens for shard, _ in done for c in shard)
            busy = sum(compute for _, compute in done)
            out[f"generate, {workers} worker(s), samples/s"] = gen_samples / seconds
            out[f"generate, {workers} worker(s), tokens/s"] = tokens / seconds
            # Model seconds per shard (inflated when workers share cores) and the share of
            # the wall clock the workers spent in the model (low: starved by dispatch).
            out[f"generate, {workers} worker(s), compute s/shard"] = busy / len(shards)
            out[f"generate, {workers} worker(s), busy share"] = busy / (seconds * workers)
            for actor in actors:
                ray.kill(actor)

        prompts: dict[int, dict[str, Any]] = {}
        samples: list[tuple[int, int, int, str]] = []
        for pid in range(verify_samples // SAMPLES_PER_PROMPT):
            x, y = rng.randrange(10**6), rng.randrange(10**6)
            prompts[pid] = {"prompt_set": "bench", "split": "train", "text": f"{x}+{y}=",
                            "reference": {"answer": str(x + y)}}  # fmt: skip
            for k in range(SAMPLES_PER_PROMPT):
                samples.append((len(samples), pid, k, str(x + y) if k % 2 else str(x - y)))
        vshards = [samples[i : i + VERIFY_SHARD] for i in range(0, len(samples), VERIFY_SHARD)]
        payload = [({p: prompts[p] for p in {x[1] for x in sh}}, sh) for sh in vshards]

        def verify(job: tuple[dict[int, Any], list[Any]], slot: int, how: str) -> Any:
            # "1": everything on the head; "2": slot k on node k; "free": Ray places it, as
            # tasks/verify.py submits (num_cpus=1, nothing pinned).
            task = score_shard
            if how != "free":
                task = score_shard.options(resources=pins[slot if how == "2" else 0])
            return task.remote(VERIFY_BOTH, job[0], job[1])

        for pin in pins:  # warm-up: a worker process with the verifiers imported per node
            ray.get(score_shard.options(resources=pin).remote(VERIFY_BOTH, *payload[0]))
        for how in ("1", "2", "free"):
            start = time.perf_counter()
            # Two slots, two shards in flight each, in every case: "1" queues on one CPU.
            rows = _spread(lambda job, slot, h=how: verify(job, slot, h), 2, payload)
            seconds = time.perf_counter() - start
            nodes = len({node for _, node, _ in rows})
            busy = sum(compute for _, _, compute in rows)
            label = {"1": "1 worker(s)", "2": "2 worker(s)", "free": "2 nodes unpinned"}[how]
            out[f"verify, {label}, samples/s"] = verify_samples / seconds
            out[f"verify, {label}, compute s/shard"] = busy / len(payload)
            out[f"verify, {label}, nodes used"] = nodes
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()
        cluster.leave_process(saved)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--parts", default="bookkeeping,shards,cluster")
    parser.add_argument("--gen-samples", type=int, default=4096)
    parser.add_argument("--verify-samples", type=int, default=65536)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="fw-scaling-") as tmp:
        server = embedded.start(Path(tmp) / "postgres")
        engine = make_engine(server.url)
        try:
            migrate.upgrade(engine)
            store = open_store(str(Path(tmp) / "objects"))
            if "bookkeeping" in parts:
                print(
                    f"{'samples':>8} {'µs/sample':>10} "
                    + " ".join(f"{k:>9}" for k in ("prompts", "generate", "verify", "select"))
                )
                bookkeeping(engine, store, 400)  # warm-up: imports, connections, caches
                per_sample = {}
                for n in sizes:
                    t = bookkeeping(engine, store, n)
                    per_sample[n] = sum(t.values()) / n * 1e6
                    print(
                        f"{n:>8} {per_sample[n]:>10.1f} "
                        + " ".join(
                            f"{t[k]:>8.2f}s" for k in ("prompts", "generate", "verify", "select")
                        )
                    )
                ratio = per_sample[sizes[-1]] / per_sample[sizes[0]]
                verdict = "meets" if ratio <= 1.2 else "misses"
                print(
                    f"per-sample cost at {sizes[-1]} vs {sizes[0]}: {ratio:.2f}x "
                    f"({verdict} the 1.2x target)"
                )
            if "shards" in parts:
                for what, ms in shard_overhead(engine, args.shards).items():
                    print(
                        f"per-shard overhead, {what}: {ms:.1f} ms "
                        f"({'meets' if ms < 100 else 'misses'} < 100 ms)"
                    )
            if "cluster" in parts:
                load = os.getloadavg()[0]
                figures = cluster_throughput(Path(tmp), args.gen_samples, args.verify_samples)
                print(f"two-node cluster: load average {load:.2f} before, "
                      f"{os.getloadavg()[0]:.2f} after")  # fmt: skip
                for what, value in figures.items():
                    whole = value >= 100 or value == int(value)
                    shown = f"{value:,.0f}" if whole else f"{value:.3f}"
                    print(f"two-node cluster, {what}: {shown}")
                for stage in ("generate", "verify"):
                    one = figures[f"{stage}, 1 worker(s), samples/s"]
                    two = figures[f"{stage}, 2 worker(s), samples/s"]
                    print(f"two-node cluster, {stage}: 2 workers / 1 worker = {two / one:.2f}x")
        finally:
            engine.dispose()
            embedded.stop(Path(tmp) / "postgres")


if __name__ == "__main__":
    main()
