"""Promotion stage: the gate that decides whether a round's candidate becomes the incumbent.

Runs in: Prefect task (flow process). The candidate is promoted when its primary metric is
no more than ``promotion.max_drop`` below the incumbent's (the last promoted checkpoint, or
the base model); otherwise it is rejected and the next round starts from the incumbent. The
decision and both numbers go into the round manifest.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dataflywheel import faults
from dataflywheel.db import checkpoints, queries
from dataflywheel.rounds.plan import EVAL_SET
from tasks import context


def gate(candidate: float, incumbent: float | None, max_drop: float) -> bool:
    """Promote unless the candidate fell more than ``max_drop`` below the incumbent."""
    return incumbent is None or candidate >= incumbent - max_drop


@task(
    name="promote_checkpoint",
    retries=2,
    retry_delay_seconds=5,
    persist_result=False,
    cache_policy=NO_CACHE,
)
def promote_checkpoint(round_id: int) -> str:
    """Promote or reject the round's candidate; returns the decision."""
    with context.session() as session:
        index = queries.get_round(session, round_id).index
    faults.pause_point(context.settings(), "promote", index)
    with context.session() as session:
        rnd = queries.get_round(session, round_id)
        run_id = rnd.run_id
        spec = queries.run_spec(session, run_id)
        candidate = checkpoints.round_candidate(session, round_id)
        if candidate is None:
            decision: dict[str, Any] = {"decision": "skipped", "reason": "no training data kept"}
        elif candidate.status in ("promoted", "rejected"):
            return candidate.status
        else:
            incumbent = checkpoints.last_promoted(session, run_id, rnd.index)
            evaluation = checkpoints.evaluation_of(session, candidate.id, EVAL_SET)
            previous = checkpoints.evaluation_of(session, incumbent.id, EVAL_SET)
            if evaluation is None:
                raise RuntimeError(f"checkpoint {candidate.id} has no evaluation to gate on")
            incumbent_value = previous.primary_value if previous else None
            promoted = gate(evaluation.primary_value, incumbent_value, spec.promotion.max_drop)
            status = "promoted" if promoted else "rejected"
            # Peers follow the model: the next round's voters come from the same round.
            for checkpoint in checkpoints.round_checkpoints(session, round_id):
                checkpoints.set_checkpoint_status(session, checkpoint.id, status)
            decision = {
                "decision": status,
                "candidate_checkpoint_id": candidate.id,
                "candidate": evaluation.primary_value,
                "incumbent_checkpoint_id": incumbent.id,
                "incumbent": incumbent_value,
                "max_drop": spec.promotion.max_drop,
            }
        queries.merge_round_manifest(session, round_id, {"promotion": decision})
        return decision["decision"]
