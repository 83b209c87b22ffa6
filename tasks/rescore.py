"""Re-scoring: score a run's stored samples with some verifiers again, without regenerating.

Runs in: Prefect task (the ``rescore`` flow's process, as the Ray driver); the scoring itself
runs in ``workers.verify.score_shard`` on the Ray CPU pool, sharded and submitted exactly as
in a round (``dataflywheel.rounds.shards``, ``workers.driver.sharded``).
``resolve_verifiers`` turns names of the run's spec and extra configurations into verifier
configurations; ``rescore_samples`` scores with one of them. Scores are unique per (sample,
verifier, version): samples that already hold a score of the same verifier version are
skipped before anything is sent to Ray (``dataflywheel.db.rescoring`` picks the rest in SQL,
however many samples the run has), and the insert is ``ON CONFLICT DO NOTHING``, so
re-running a rescore (a retry, a second call) changes nothing, while a new verifier version
(changed code or configuration) adds rows beside the old ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import TypeAdapter

from dataflywheel.db import ingest, queries, rescoring, samples
from dataflywheel.rounds import shards as sharding
from dataflywheel.spec import RunSpec, VerifierConfig
from dataflywheel.verifiers import build
from tasks import context
from workers.driver import placement, scoring
from workers.driver.sharded import submit_sharded

Purpose = Literal["train", "eval", "baseline"]
PURPOSES: tuple[Purpose, ...] = ("train", "eval", "baseline")


@dataclass(frozen=True)
class RescoreResult:
    """One verifier's rescore: how many samples it covered and what it added."""

    verifier: str
    version: str
    samples: int
    already_scored: int
    inserted: int
    passed: int
    failed: int
    unscorable: int


def resolve_configs(
    spec: RunSpec, names: Sequence[str], extra: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Verifier configurations by name from the run's spec, plus ``extra`` ones (validated)."""
    known = {v.name: v.model_dump(mode="json") for v in spec.verification.verifiers}
    configs = []
    for name in names:
        if name not in known:
            raise LookupError(
                f"--verifier {name!r}: run's spec has verifiers {sorted(known)}; pass a "
                "configuration file with --config to score with another verifier"
            )
        configs.append(known[name])
    adapter = TypeAdapter(VerifierConfig)
    configs += [adapter.validate_python(c).model_dump(mode="json") for c in extra]
    seen = [c["name"] for c in configs]
    if len(set(seen)) != len(seen):
        raise ValueError(f"each verifier may be rescored once per call, got {seen}")
    if not configs:
        raise ValueError("name at least one verifier (--verifier NAME or --config FILE)")
    return configs


@task(name="resolve_verifiers", persist_result=False, cache_policy=NO_CACHE)
def resolve_verifiers(
    run_id: int, names: list[str], extra: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The configurations to rescore ``run_id`` with (see :func:`resolve_configs`); raises
    ``LookupError`` for an unknown run or verifier name."""
    with context.session() as session:
        spec = RunSpec.model_validate(queries.get_run(session, run_id).spec)
    return resolve_configs(spec, names, extra)


@task(
    name="rescore_samples",
    retries=2,
    retry_delay_seconds=5,
    persist_result=False,
    cache_policy=NO_CACHE,
)
def rescore_samples(
    run_id: int,
    config: dict[str, Any],
    purposes: list[str],
    round_index: int | None = None,
) -> RescoreResult:
    """Score the run's samples of ``purposes`` (one round, or all) with ``config``; only
    samples without a score of this verifier version are sent to Ray."""
    from workers.verify import score_shard

    name, version = config["name"], build(config).version
    chosen = rescoring.Selection(run_id, tuple(purposes), round_index)
    with context.session() as session:
        queries.get_run(session, run_id)  # raises LookupError for an unknown run
        covered = rescoring.coverage(session, chosen, name, version)
        # Whole prompts per shard (a majority vote compares a prompt's samples); a group
        # verifier re-scores every sample of a prompt that has any sample missing.
        todo = rescoring.samples_to_score(
            session, chosen, name, version, whole_prompts=name == "majority_vote"
        )
        prompts = samples.prompt_payloads(session, [s.prompt_id for s in todo])
        models = scoring.scoring_models(session, [config], [s.id for s in todo])

    # A shard never mixes rounds or purposes: score_shard groups a shard's samples by
    # prompt, and a majority vote must not pool two models' answers to one prompt.
    shards = [
        shard
        for _, part in groupby(todo, key=lambda s: (s.round_id, s.purpose))
        for shard in sharding.by_prompt(part)
    ]
    inserted = 0

    def submit(index: int) -> Any:
        shard = shards[index]
        task = score_shard.options(**placement.scorer_options([config]))
        return task.remote([config], sharding.prompts_of(shard, prompts), shard, models)

    def finish(index: int, result: tuple[list[dict[str, Any]], str, float]) -> None:
        nonlocal inserted
        rows = result[0]
        with context.session() as session:
            counts = ingest.insert_scores(session, [ingest.ScoreRow(**r) for r in rows])
        inserted += counts.inserted

    if shards:
        context.connect_ray()
        submit_sharded(range(len(shards)), submit, finish, scoring.MAX_IN_FLIGHT)
    with context.session() as session:
        verdicts = rescoring.tally(session, chosen, name, version)
    return RescoreResult(
        verifier=name,
        version=version,
        samples=covered.samples,
        already_scored=covered.scored,
        inserted=inserted,
        passed=verdicts.passed,
        failed=verdicts.failed,
        unscorable=verdicts.unscorable,
    )
