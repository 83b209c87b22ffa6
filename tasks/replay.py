"""Replay bookkeeping: create the run that re-executes a past round, with stand-ins for the
rounds before it.

Runs in: Prefect task (flow process). The plan (``dataflywheel.replay``) is read and every
input proven present in the store before the first write; then, in one transaction, the new
run (``replay_of_round_id`` set, the source's spec unchanged) gets a copy of the source's
base checkpoint, one *stub* round per earlier round (the source's manifest, dataset and
checkpoint rows pointing at the same objects, its evaluations), and the replayed round's row
with the source's seed and curriculum band. ``flywheel_round`` then runs unchanged.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dataflywheel import replay
from dataflywheel.db import checkpoints, queries
from dataflywheel.rounds.manifest import current_versions
from dataflywheel.rounds.plan import EVAL_SET, verifier_versions
from dataflywheel.spec import RunSpec
from tasks import context


def mismatches(plan: replay.ReplayPlan) -> list[str]:
    """How the environment now differs from the one that ran the source round."""
    spec = RunSpec.model_validate(plan.spec)
    code, packages = current_versions()
    return replay.version_mismatches(
        plan.manifest,
        code=code,
        packages=packages,
        verifiers=verifier_versions(spec),
        spec_hash=plan.spec_hash,
    )


@task(name="register_replay", persist_result=False, cache_policy=NO_CACHE)
def register_replay(source_run_id: int, index: int, warnings: list[str]) -> tuple[int, int, bool]:
    """Create the replay run of ``source_run_id`` round ``index``; returns its id, how
    many peer models its rounds train and whether they share GPUs (colocate)."""
    with context.session() as session:
        plan = replay.plan_replay(session, source_run_id, index)
    replay.require_inputs(plan, context.store())
    with context.session() as session:
        run_id = queries.create_run(
            session,
            name=f"{plan.name} (replay of run {source_run_id} round {index})",
            spec=plan.spec,
            spec_hash=plan.spec_hash,
            replay_of_round_id=plan.source_round_id,
        )
        queries.set_run_status(session, run_id, "running")
        stub_round = {}
        for rnd in plan.earlier_rounds:
            stub_id = queries.ensure_round(session, run_id, rnd.index, rnd.seed)
            stub = {"source_run_id": source_run_id, "source_round_id": rnd.id}
            queries.merge_round_manifest(session, stub_id, {**rnd.manifest, "replay_stub": stub})
            queries.set_manifest_digest(session, stub_id, rnd.manifest_digest)
            queries.set_round_status(session, stub_id, "running")
            queries.set_round_status(session, stub_id, "succeeded")
            stub_round[rnd.id] = stub_id
        new_checkpoint = _copy_checkpoints(session, plan, run_id, stub_round)
        _copy_datasets(session, plan, run_id, stub_round, new_checkpoint)
        round_id = queries.ensure_round(session, run_id, index, plan.round_seed)
        patch: dict[str, Any] = {
            "replay": {
                "source_run_id": source_run_id,
                "source_round_id": plan.source_round_id,
                "mismatches": warnings,
            }
        }
        if plan.curriculum:
            patch["curriculum"] = plan.curriculum
        queries.merge_round_manifest(session, round_id, patch)
        spec = RunSpec.model_validate(plan.spec)
        return run_id, spec.training.peers, spec.resources.gpu_sharing == "colocate"


def _copy_checkpoints(
    session: Any, plan: replay.ReplayPlan, run_id: int, stub_round: dict[int, int]
) -> dict[int, int]:
    """The source's base and earlier checkpoints, same weights and status; returns
    {source checkpoint id: copy id}. Parents come first (base, then by round index)."""
    copies: dict[int, int] = {}
    for c in plan.checkpoints:
        new_id = checkpoints.ensure_checkpoint(
            session,
            run_id=run_id,
            round_id=stub_round[c.round_id] if c.round_id is not None else None,
            parent_id=copies.get(c.parent_id) if c.parent_id is not None else None,
            status=c.status,
            source_uri=c.source_uri,
            training_config=c.training_config,
            peer=c.peer,
        )
        assert c.object_key is not None and c.digest is not None  # plan_replay checked
        checkpoints.set_checkpoint_weights(
            session, new_id, object_key=c.object_key, digest=c.digest
        )
        if c.status == "promoted":
            checkpoints.set_checkpoint_status(session, new_id, "promoted")
        copies[c.id] = new_id
        evaluation = checkpoints.evaluation_of(session, c.id, EVAL_SET)
        if evaluation is not None:
            # The promotion gate and the curriculum compare against these numbers.
            checkpoints.ensure_evaluation(
                session,
                checkpoint_id=new_id,
                round_id=None,
                eval_set=EVAL_SET,
                metrics={**evaluation.metrics, "replay_stub_of_evaluation": evaluation.id},
                primary_metric=evaluation.primary_metric,
                primary_value=evaluation.primary_value,
                results=[],
            )
    return copies


def _copy_datasets(
    session: Any,
    plan: replay.ReplayPlan,
    run_id: int,
    stub_round: dict[int, int],
    new_checkpoint: dict[int, int],
) -> None:
    """Earlier rounds' datasets (the training mix replays from them), same file, same
    members, and which copied checkpoint trained on which."""
    new_dataset = {}
    for d in plan.datasets:
        assert d.round_id is not None
        new_dataset[d.id] = checkpoints.ensure_dataset(
            session,
            run_id=run_id,
            round_id=stub_round[d.round_id],
            name=d.name,
            kind=d.kind,
            recipe=d.recipe,
            recipe_config=d.recipe_config,
            digest=d.digest,
            object_key=d.object_key,
            row_count=d.row_count,
            stats=d.stats,
            members=replay.copied_members(session, d.id),
        )
    for link in replay.training_links(session, list(new_checkpoint)):
        if link.dataset_id in new_dataset:
            checkpoints.link_training_data(
                session,
                new_checkpoint[link.checkpoint_id],
                [(new_dataset[link.dataset_id], link.share or 0.0)],
            )
