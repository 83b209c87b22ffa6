"""Generation stage: draw every sample of a round (or of an evaluation) on the generator pool.

Runs in: Prefect task (flow process, as the Ray driver). The requests are recomputed from the
spec (``rounds.plan``), cut into deterministic shards recorded in the ledger, and sent to the
peer model's pool of long-lived generator actors (``resources.generators`` of them;
``workers/driver/generator_pool.py`` hands out shards with ``ray.wait`` backpressure and
replaces an actor that hangs or dies, retrying only its shards). Each finished shard's
samples and its ledger row (with the node that drew it) commit together, so a retry or a
resume redoes only unfinished shards and the unique key on samples absorbs any overlap. The
shards and every request's seed follow from the spec alone, so the samples are the same for
any pool size.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from dataflywheel import faults
from dataflywheel.db import checkpoints, ingest, queries, samples
from dataflywheel.generation import Completion, GenerationRequest
from dataflywheel.generation.engine_options import backend_options
from dataflywheel.generation.prompt_format import PromptFormat
from dataflywheel.prompts import Prompt, canonical_json, sha256_hex
from dataflywheel.rounds import plan
from dataflywheel.spec import RunSpec
from tasks import context
from workers.driver import generator_pool, gpu_lease

SHARD_SIZE = 256  # requests per shard: big enough to batch well, small enough to redo cheaply
SHARD_TOKENS = SHARD_SIZE * 64  # vLLM: new tokens a shard may ask for (see shard_size)


@task(name="start_generators", persist_result=False, cache_policy=NO_CACHE)
def start_generators(run_id: int) -> int:
    """Create the run's generator actors before its first generation stage (they load
    their libraries meanwhile); returns how many."""
    with context.session() as session:
        spec = queries.run_spec(session, run_id)
    return generator_pool.start_actors(run_id, spec, backend_options(spec), context.settings())


def shard_size(backend: str, requests: int, max_tokens: int, actors: int) -> int:
    """Requests per shard of a stage: ``SHARD_SIZE``; with vLLM, more when each request asks
    for few tokens (up to ``SHARD_TOKENS`` a shard), but never so many that one of the pool's
    ``actors`` gets no shard. vLLM batches continuously within one call only, so a fast
    model's stage cut into short calls loses batching at every shard boundary besides paying
    each shard's COPY and ledger marks (bench/generate_stage.py); transformers batches
    ``generation.batch_size`` at a time within a call either way. A function of the spec
    alone: a resumed stage plans the same shards."""
    if backend != "vllm":
        return SHARD_SIZE
    per_actor = -(-requests // actors)  # ceil
    return max(SHARD_SIZE, min(SHARD_TOKENS // max_tokens, per_actor))


def stage_prompts(spec: RunSpec, round_index: int, purpose: str, band: plan.Band) -> list[Prompt]:
    if purpose == "train":
        return plan.train_prompts(spec, round_index, band)
    return plan.eval_prompts(spec)


def shard_digest(shard: list[GenerationRequest], model_digest: str, sampling: Any) -> str:
    # Database ids are left out on purpose: the same round replayed into another database
    # must produce the same digests.
    payload = [[r.seed, r.sample_index, r.prompt] for r in shard]
    return sha256_hex(canonical_json([payload, model_digest, asdict(sampling)]))


def band_of(round_manifest: dict[str, Any] | None, spec: RunSpec) -> plan.Band:
    band = (round_manifest or {}).get("curriculum")
    return (band["min_difficulty"], band["max_difficulty"]) if band else plan.initial_band(spec)


# tags=["gpu"]: `flywheel deploy --gpu-slots` limits concurrent GPU-bound task runs by tag.
@task(
    name="generate_samples",
    retries=2,
    retry_delay_seconds=5,
    tags=["gpu"],
    persist_result=False,
    cache_policy=NO_CACHE,
)
def generate_samples(round_id: int, purpose: str, checkpoint_id: int, peer: int = 0) -> int:
    """Generate the stage's samples with ``checkpoint_id`` (peer ``peer``'s model: its own
    sample indices and ledger stage); returns how many it generated."""
    with context.session() as session:
        rnd = queries.get_round(session, round_id)
        run_id, index = rnd.run_id, rnd.index
        spec = queries.run_spec(session, run_id)
        checkpoint = checkpoints.get_checkpoint(session, checkpoint_id)
        model_key, model_digest = checkpoint.object_key, checkpoint.digest
        prompts = stage_prompts(spec, index, purpose, band_of(rnd.manifest, spec))
        refs = samples.register_prompts(session, prompts)
    if model_key is None or model_digest is None:
        raise RuntimeError(f"checkpoint {checkpoint_id} has no weights in the store yet")

    sampling = plan.sampling(spec, purpose)
    requests = plan.requests(spec, index, purpose, refs, peer)
    options, settings = backend_options(spec), context.settings()
    gens = [
        generator_pool.Generator(
            run_id, spec, peer, slot, model_key, sampling.dtype, options, settings
        )
        for slot in range(spec.resources.generators)
    ]
    prompt_format = plan.prompt_format(spec, "generate")
    requests = _render(gens[0], requests, prompt_format)
    size = shard_size(spec.generation.backend, len(requests), sampling.max_tokens, len(gens))
    shards = [requests[i : i + size] for i in range(0, len(requests), size)]
    stage = f"generate_{purpose}" + (f"_peer{peer}" if peer else "")
    with context.session() as session:
        status = queries.plan_shards(
            session, round_id, stage, [shard_digest(s, model_digest, sampling) for s in shards]
        )
    todo = [i for i in range(len(shards)) if status.get(i) != "done"]
    if not todo:
        _record_loads(gens, round_id, stage)
        return len(requests)
    params = {
        **asdict(sampling),
        "backend": spec.generation.backend,
        "prompt_format": prompt_format.describe(),
    }
    bar = tqdm(total=len(todo), desc=f"round {index} generate ({purpose})", unit="shard")

    def begin(shard_index: int) -> None:
        with context.session() as session:
            queries.mark_shard(session, round_id, stage, shard_index, "running")

    def finish(shard_index: int, completions: list[Completion], seconds: float, node: str) -> None:
        # The shard's samples and its `done` commit together: a retry redoes it whole or not.
        with context.session() as session:
            ingest.insert_samples(
                session,
                [_sample_row(round_id, checkpoint_id, purpose, c, params) for c in completions],
            )
            queries.mark_shard(session, round_id, stage, shard_index, "done", worker_node=node)
            queries.add_compute_seconds(session, round_id, stage, seconds)
        bar.update(1)
        if purpose == "train":
            faults.pause_point(settings, "generate", index)

    started = time.time()
    generator_pool.run(gens, shards, todo, sampling, begin, finish)
    bar.close()
    _record_loads(gens, round_id, stage)
    if spec.uses_gpus:
        leases = gpu_lease.stage_leases(gens, stage, started)
        with context.session() as session:
            queries.add_gpu_leases(session, round_id, leases)
    return len(requests)


def _record_loads(gens: list[generator_pool.Generator], round_id: int, stage: str) -> None:
    """Add the seconds the stage's actors spent loading its model to the round's
    ``compute_seconds`` under ``load_<stage>``: model work, but not generation."""
    asked = [(gen, gen.actor.take_load_seconds.remote()) for gen in gens if gen.node]
    seconds = sum(gen.call(ref) for gen, ref in asked)
    if seconds > 0:
        with context.session() as session:
            queries.add_compute_seconds(session, round_id, f"load_{stage}", seconds)


def _render(
    gen: generator_pool.Generator, requests: list[GenerationRequest], prompt_format: PromptFormat
) -> list[GenerationRequest]:
    """The requests with each prompt as the model is fed it (exemplars, chat template)."""
    prompts = [r.prompt for r in requests]
    if prompt_format.needs_tokenizer:
        # The template belongs to the model's tokenizer, which only the workers load: one
        # ready actor of the pool renders them all.
        texts = gen.call(gen.ready().render_prompts.remote(prompts, prompt_format))
    else:
        texts = prompt_format.render(prompts)
    return [replace(r, prompt=t) for r, t in zip(requests, texts, strict=True)]


def _sample_row(
    round_id: int, checkpoint_id: int, purpose: str, c: Completion, params: dict[str, Any]
) -> ingest.SampleRow:
    return ingest.SampleRow(
        round_id=round_id,
        prompt_id=c.prompt_id,
        checkpoint_id=checkpoint_id,
        sample_index=c.sample_index,
        seed=c.seed,
        text=c.text,
        sampling_params=params,
        purpose=purpose,
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        finish_reason=c.finish_reason,
    )
