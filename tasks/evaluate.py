"""Evaluation stage: metrics of a checkpoint on the held-out set, from its scored samples.

Runs in: Prefect task (flow process). The samples were drawn (``generate_samples``) and
scored (``score_samples``) with purpose ``eval`` (the round's candidate) or ``baseline`` (the
run's base model, once); this task turns the evaluation verifier's verdicts into per-prompt
results and the spec's metrics, and records them once per checkpoint and eval set. A
curriculum with ``gate: top_level`` always gets ``per_difficulty_accuracy`` too: its gate
reads it.
"""

from __future__ import annotations

from collections import defaultdict

from prefect import task
from prefect.cache_policies import NO_CACHE

from dataflywheel import faults
from dataflywheel.db import checkpoints, queries, samples
from dataflywheel.metrics import PromptResult, per_difficulty_accuracy, summarise
from dataflywheel.rounds.plan import EVAL_SET, per_level_eval, verifier_versions
from tasks import context


@task(
    name="evaluate_checkpoint",
    retries=2,
    retry_delay_seconds=5,
    persist_result=False,
    cache_policy=NO_CACHE,
)
def evaluate_checkpoint(round_id: int, checkpoint_id: int, purpose: str = "eval") -> float:
    """Record the checkpoint's evaluation; returns the primary metric."""
    with context.session() as session:
        index = queries.get_round(session, round_id).index
    if purpose == "eval":
        faults.pause_point(context.settings(), "evaluate", index)
    with context.session() as session:
        rnd = queries.get_round(session, round_id)
        spec = queries.run_spec(session, rnd.run_id)
        existing = checkpoints.evaluation_of(session, checkpoint_id, EVAL_SET)
        if existing is not None:
            return existing.primary_value
        versions = verifier_versions(spec)
        rows = samples.evaluation_samples(
            session, round_id, purpose, checkpoint_id, spec.eval_verifier,
            versions[spec.eval_verifier],
        )  # fmt: skip
        if not rows:
            raise RuntimeError(
                f"checkpoint {checkpoint_id}: no scored {purpose} samples in round {round_id}; "
                "generate and score them first"
            )
        per_prompt: dict[int, dict] = defaultdict(lambda: {"n": 0, "c": 0, "ids": [], "d": None})
        unscorable = 0
        for prompt_id, sample_id, passed, status, difficulty in rows:
            entry = per_prompt[prompt_id]
            entry["n"] += 1
            entry["c"] += int(bool(passed))
            entry["ids"].append(sample_id)
            entry["d"] = difficulty
            unscorable += status == "unscorable"
        results = [
            PromptResult(prompt_id=pid, n=e["n"], correct=e["c"], difficulty=e["d"])
            for pid, e in sorted(per_prompt.items())
        ]
        ev = spec.evaluation
        metrics = summarise(results, ev.metrics, ev.k)
        if per_level_eval(spec) and "per_difficulty_accuracy" not in metrics:
            # The curriculum's top_level gate reads it (rounds/curriculum.py).
            metrics["per_difficulty_accuracy"] = per_difficulty_accuracy(results)
        metrics = {**metrics, "k": ev.k, "prompts": len(results), "samples": len(rows)}
        metrics["unscorable"] = unscorable
        primary = float(metrics[ev.primary])
        checkpoints.ensure_evaluation(
            session,
            checkpoint_id=checkpoint_id,
            round_id=round_id,
            eval_set=EVAL_SET,
            metrics=metrics,
            primary_metric=ev.primary,
            primary_value=primary,
            results=[
                {
                    "prompt_id": pid,
                    "passed": e["c"] > 0,
                    "value": e["c"] / e["n"],
                    "details": {"n": e["n"], "correct": e["c"], "sample_ids": e["ids"]},
                }
                for pid, e in sorted(per_prompt.items())
            ],
        )
        return primary
