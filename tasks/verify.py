"""Verification stage: score a round's samples with the spec's verifiers, on a Ray CPU pool.

Runs in: Prefect task (flow process, as the Ray driver). Samples are sharded by prompt (a
majority vote needs all of a prompt's samples in one shard), every shard is a Ray task
(``workers.verify.score_shard``), at most ``MAX_IN_FLIGHT`` at a time, and each shard's
scores commit together with its ledger row. Scores are unique per sample and verifier
version, so re-running the stage writes nothing new.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from dataflywheel import faults
from dataflywheel.db import ingest, queries, rescoring
from dataflywheel.db.models import Checkpoint, Sample
from dataflywheel.db.models import Prompt as PromptModel
from dataflywheel.prompts import canonical_json, sha256_hex
from dataflywheel.spec import RunSpec
from dataflywheel.verifiers import MODEL_SCORERS
from tasks import context

SAMPLES_PER_SHARD = 1024
MAX_IN_FLIGHT = 4


def verifier_configs(spec: RunSpec, purpose: str) -> list[dict[str, Any]]:
    """All verifiers for training samples; only the evaluation verifier for eval samples
    (a majority vote over one greedy sample per prompt would say nothing)."""
    configs = [v.model_dump(mode="json") for v in spec.verification.verifiers]
    if purpose == "train":
        return configs
    return [c for c in configs if c["name"] == spec.eval_verifier]


def _prompt_payload(p: PromptModel) -> dict[str, Any]:
    return {
        "prompt_set": p.prompt_set,
        "split": p.split,
        "text": p.text,
        "reference": p.reference,
        "tests": p.tests,
        "difficulty": p.difficulty,
        "metadata": p.meta,
    }


def scoring_models(session: Any, configs: list[dict[str, Any]], sample_ids: list[int]) -> Any:
    """What model scorers need on the worker (store access; for a judge with ``model:
    current``, each sample's generating checkpoint key); None without model scorers."""
    from workers import pool
    from workers.model_scorers import ScoringModels

    if not any(c["name"] in MODEL_SCORERS for c in configs):
        return None
    sample_models: dict[int, str] = {}
    if any(c["name"] == "llm_judge" and c.get("model", "current") == "current" for c in configs):
        for start in range(0, len(sample_ids), 10_000):
            chunk = sample_ids[start : start + 10_000]
            sample_models.update(
                session.execute(
                    sa.select(Sample.id, "store:" + Checkpoint.object_key)
                    .join(Checkpoint, Checkpoint.id == Sample.checkpoint_id)
                    .where(Sample.id.in_(chunk), Checkpoint.object_key.is_not(None))
                ).all()
            )
    store_uri, store_options, cache_dir = pool.store_args()
    return ScoringModels(store_uri, store_options, cache_dir, sample_models)


@task(
    name="score_samples",
    retries=2,
    retry_delay_seconds=5,
    persist_result=False,
    cache_policy=NO_CACHE,
)
def score_samples(round_id: int, purpose: str) -> int:
    """Score every sample of ``purpose`` in the round; returns the number of samples."""
    import ray

    from workers import pool
    from workers.verify import score_shard

    with context.session() as session:
        rnd = queries.get_round(session, round_id)
        spec = queries.run_spec(session, rnd.run_id)
        samples = session.execute(
            sa.select(Sample.id, Sample.prompt_id, Sample.sample_index, Sample.text)
            .where(Sample.round_id == round_id, Sample.purpose == purpose)
            .order_by(Sample.prompt_id, Sample.sample_index)
        ).all()
        prompt_ids = sorted({s.prompt_id for s in samples})
        # In chunks: a round can have more prompts than PostgreSQL takes parameters (65,535).
        prompts = {p.id: _prompt_payload(p) for p in rescoring.prompts_by_id(session, prompt_ids)}
    configs = verifier_configs(spec, purpose)
    with context.session() as session:
        models = scoring_models(session, configs, [s.id for s in samples])

    # Shards hold whole prompts, in prompt order, so they are the same on every attempt.
    shards: list[list[tuple[int, int, int, str]]] = [[]]
    for row in samples:
        current = shards[-1]
        if len(current) >= SAMPLES_PER_SHARD and current[-1][1] != row.prompt_id:
            shards.append(current := [])
        current.append((row.id, row.prompt_id, row.sample_index, row.text))
    shards = [s for s in shards if s]
    stage = f"verify_{purpose}"
    digests = [
        sha256_hex(canonical_json([configs, [(s[0], s[3]) for s in shard]])) for shard in shards
    ]
    with context.session() as session:
        status = queries.plan_shards(session, round_id, stage, digests)
    todo = [i for i in range(len(shards)) if status.get(i) != "done"]
    if not todo:
        return len(samples)

    context.connect_ray()
    score = score_shard.options(**pool.verify_options(spec))
    bar = tqdm(total=len(todo), desc=f"round {rnd.index} verify ({purpose})", unit="shard")
    in_flight: dict[Any, int] = {}
    queue = list(todo)
    while queue or in_flight:
        while queue and len(in_flight) < MAX_IN_FLIGHT:
            index = queue.pop(0)
            shard = shards[index]
            needed = {pid: prompts[pid] for pid in {s[1] for s in shard}}
            with context.session() as session:
                queries.mark_shard(session, round_id, stage, index, "running")
            in_flight[score.remote(configs, needed, shard, models)] = index
        done, _ = ray.wait(list(in_flight), num_returns=1)
        index = in_flight.pop(done[0])
        rows, node, seconds = ray.get(done[0])
        with context.session() as session:
            ingest.insert_scores(session, [ingest.ScoreRow(**row) for row in rows])
            queries.mark_shard(session, round_id, stage, index, "done", worker_node=node)
            queries.add_compute_seconds(session, round_id, stage, seconds)
        bar.update(1)
        if purpose == "train":
            faults.pause_point(context.settings(), "verify", rnd.index)
    bar.close()
    return len(samples)
