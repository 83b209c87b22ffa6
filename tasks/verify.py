"""Verification stage: score a round's samples with the spec's verifiers, on a Ray CPU pool.

Runs in: Prefect task (flow process, as the Ray driver). Samples are sharded by prompt (a
majority vote needs all of a prompt's samples in one shard: ``dataflywheel.rounds.shards``),
every shard is a Ray task (``workers.verify.score_shard``), submitted through
``workers.driver.sharded`` at most ``scoring.MAX_IN_FLIGHT`` at a time, and each shard's
scores commit together with its ledger row. Scores are unique per sample and verifier
version, so re-running the stage writes nothing new.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from dataflywheel import faults
from dataflywheel.db import ingest, queries, samples
from dataflywheel.prompts import canonical_json, sha256_hex
from dataflywheel.rounds import shards as sharding
from dataflywheel.spec import RunSpec
from tasks import context
from workers.driver import placement, scoring
from workers.driver.sharded import submit_sharded


def verifier_configs(spec: RunSpec, purpose: str) -> list[dict[str, Any]]:
    """All verifiers for training samples; only the evaluation verifier for eval samples
    (a majority vote over one greedy sample per prompt would say nothing)."""
    configs = [v.model_dump(mode="json") for v in spec.verification.verifiers]
    if purpose == "train":
        return configs
    return [c for c in configs if c["name"] == spec.eval_verifier]


@task(
    name="score_samples",
    retries=2,
    retry_delay_seconds=5,
    persist_result=False,
    cache_policy=NO_CACHE,
)
def score_samples(round_id: int, purpose: str) -> int:
    """Score every sample of ``purpose`` in the round; returns the number of samples."""
    from workers.verify import score_shard

    with context.session() as session:
        rnd = queries.get_round(session, round_id)
        spec = queries.run_spec(session, rnd.run_id)
        rows = samples.stage_samples(session, round_id, purpose)
        prompts = samples.prompt_payloads(session, [s.prompt_id for s in rows])
    configs = verifier_configs(spec, purpose)
    with context.session() as session:
        models = scoring.scoring_models(session, configs, [s.id for s in rows])

    # Shards hold whole prompts, in prompt order, so they are the same on every attempt.
    shards = sharding.by_prompt(rows)
    stage = f"verify_{purpose}"
    digests = [
        sha256_hex(canonical_json([configs, [(s[0], s[3]) for s in shard]])) for shard in shards
    ]
    with context.session() as session:
        status = queries.plan_shards(session, round_id, stage, digests)
    todo = [i for i in range(len(shards)) if status.get(i) != "done"]
    if not todo:
        return len(rows)

    context.connect_ray()
    score = score_shard.options(**placement.verify_options(spec))
    bar = tqdm(total=len(todo), desc=f"round {rnd.index} verify ({purpose})", unit="shard")

    def submit(index: int) -> Any:
        shard = shards[index]
        needed = sharding.prompts_of(shard, prompts)
        with context.session() as session:
            queries.mark_shard(session, round_id, stage, index, "running")
        return score.remote(configs, needed, shard, models)

    def finish(index: int, result: tuple[list[dict[str, Any]], str, float]) -> None:
        scored, node, seconds = result
        # The shard's scores and its `done` commit together: a retry redoes it whole or not.
        with context.session() as session:
            ingest.insert_scores(session, [ingest.ScoreRow(**row) for row in scored])
            queries.mark_shard(session, round_id, stage, index, "done", worker_node=node)
            queries.add_compute_seconds(session, round_id, stage, seconds)
        bar.update(1)
        if purpose == "train":
            faults.pause_point(context.settings(), "verify", rnd.index)

    submit_sharded(todo, submit, finish, scoring.MAX_IN_FLIGHT)
    bar.close()
    return len(rows)


def gpu_tagged(task: Any) -> Any:
    """``task`` tagged ``gpu``: scoring with a model scorer that reserves GPUs counts
    against ``flywheel deploy --gpu-slots`` like generation and training."""
    return task.with_options(tags={*task.tags, "gpu"})
