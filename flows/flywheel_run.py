"""The ``flywheel_run`` flow: register a run, prepare its base model, run its rounds.

Runs in: the flow process. The spec is the flow's typed parameter, so the Prefect UI renders
a form for it. Passing ``run_id`` resumes an existing run: finished rounds are skipped (every
task is idempotent), unfinished ones continue where their ledger says.
"""

from __future__ import annotations

from prefect import flow

from dataflywheel.spec import RunSpec
from flows.flywheel_round import flywheel_round
from tasks.context import check_cluster, connect_ray
from tasks.generate import start_generators
from tasks.lineage import run_events
from tasks.rounds import round_finished
from tasks.runs import finish_run, prepare_base_model, register_run


@flow(name="flywheel_run", flow_run_name="{spec.name}", persist_result=False)
def flywheel_run(spec: RunSpec, run_id: int | None = None) -> int:
    """Run every round of ``spec``; returns the run id.

    Args:
        spec: The run spec (the same document as a spec file).
        run_id: An existing run to continue instead of registering a new one (`POST /runs`
            and `flywheel resume` set it).
    """
    from dataflywheel.rounds.plan import round_indices

    connect_ray()  # once, before the peers' tasks run side by side
    registered = run_id is not None  # by `POST /runs` or `flywheel resume`
    if not registered:
        check_cluster(spec)  # a reservation the cluster cannot grant would wait forever
        run_id = register_run(spec)
    with run_events(run_id):  # OpenLineage START / COMPLETE / FAIL, when configured
        try:
            if registered:  # refused like a new one, but the run's row records why
                check_cluster(spec)
            todo = [i for i in round_indices(spec) if not round_finished(run_id, i)]
            if todo:  # the generators start up while the base model is prepared
                start_generators(run_id)
            prepare_base_model(run_id)
            for position, index in enumerate(round_indices(spec)):
                if index in todo:
                    flywheel_round(
                        run_id,
                        index,
                        evaluate_base=position == 0,
                        peers=spec.training.peers,
                        share_gpus=spec.resources.gpu_sharing == "colocate",
                        gpu_scoring=spec.scorer_gpus > 0,
                    )
        except BaseException as exc:
            finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        finish_run(run_id, "succeeded")
    return run_id
