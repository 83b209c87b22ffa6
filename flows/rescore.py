"""The ``rescore`` flow: score a run's stored samples again with some verifiers, no
regeneration.

Runs in: the flow process (``flywheel rescore``, or a worker running the ``rescore``
deployment). Composition only: ``resolve_verifiers`` reads the run's spec and returns the
verifier configurations, then one ``rescore_samples`` task per verifier scores the samples
that lack a score of that verifier version (on the Ray CPU pool), so a retried or repeated
rescore inserts nothing new.
"""

from __future__ import annotations

from prefect import flow

from dataflywheel.spec import VerifierConfig
from tasks.context import connect_ray
from tasks.rescore import PURPOSES, Purpose, RescoreResult, rescore_samples, resolve_verifiers


@flow(name="rescore", flow_run_name="rescore run {run_id}", persist_result=False)
def rescore(
    run_id: int,
    verifiers: list[str] | None = None,
    configs: list[VerifierConfig] | None = None,
    purposes: list[Purpose] | None = None,
    round_index: int | None = None,
) -> list[RescoreResult]:
    """Re-score run ``run_id``'s stored samples; returns one summary per verifier.

    Args:
        run_id: The run whose samples are scored again.
        verifiers: Verifiers of the run's spec, by name (e.g. exact_answer).
        configs: Further verifier configurations (e.g. an llm_judge or a reward_model); a
            changed configuration is a new version and adds rows beside the old ones.
        purposes: Which samples: train, eval and/or baseline (default: all of them).
        round_index: Only this round's samples (default: every round).
    """
    connect_ray()
    resolved = resolve_verifiers(
        run_id, verifiers or [], [c.model_dump(mode="json") for c in configs or []]
    )
    chosen = list(purposes or PURPOSES)
    return [rescore_samples(run_id, config, chosen, round_index) for config in resolved]
