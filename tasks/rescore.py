"""Re-scoring: score a run's stored samples with some verifiers again, without regenerating.

Runs in: Prefect task (the ``rescore`` flow's process, as the Ray driver); the scoring itself
runs in ``workers.verify.score_shard`` on the Ray CPU pool, exactly as in a round.
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
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import TypeAdapter

from dataflywheel.db import ingest, queries, rescoring
from dataflywheel.spec import RunSpec, VerifierConfig
from dataflywheel.verifiers import build
from tasks import context
from tasks.verify import MAX_IN_FLIGHT, SAMPLES_PER_SHARD, _prompt_payload, scoring_models

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
    import ray

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
        prompts = {
            p.id: _prompt_payload(p)
            for p in rescoring.prompts_by_id(session, [s.prompt_id for s in todo])
        }
        models = scoring_models(session, [config], [s.id for s in todo])

    shards: list[list[tuple[int, int, int, str]]] = [[]]
    for row in todo:
        current = shards[-1]
        if len(current) >= SAMPLES_PER_SHARD and current[-1][1] != row.prompt_id:
            shards.append(current := [])
        current.append((row.id, row.prompt_id, row.sample_index, row.text))
    shards = [s for s in shards if s]
    inserted = 0
    if shards:
        context.connect_ray()
        queue: list[list[tuple[int, int, int, str]]] = list(shards)
        in_flight: list[Any] = []
        while queue or in_flight:
            while queue and len(in_flight) < MAX_IN_FLIGHT:
                shard = queue.pop(0)
                needed = {pid: prompts[pid] for pid in {s[1] for s in shard}}
                in_flight.append(score_shard.remote([config], needed, shard, models))
            ready, in_flight = ray.wait(in_flight, num_returns=1)
            rows, _, _ = ray.get(ready[0])
            with context.session() as session:
                counts = ingest.insert_scores(session, [ingest.ScoreRow(**r) for r in rows])
            inserted += counts.inserted
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
