"""The ``flywheel_replay`` flow: re-execute one finished round into a new run.

Runs in: the flow process. ``register_replay`` creates the replay run (stand-ins for the
earlier rounds, the source round's seed and curriculum), then the ordinary
``flywheel_round`` runs round ``index`` on it — the same code path as the original, so a
replay tests exactly what ran. ``flywheel diff`` compares the two rounds afterwards.
"""

from __future__ import annotations

from prefect import flow

from flows.flywheel_round import flywheel_round
from tasks.context import connect_ray
from tasks.lineage import run_events
from tasks.replay import register_replay
from tasks.runs import finish_run


@flow(
    name="flywheel_replay", flow_run_name="replay run {run_id} round {index}", persist_result=False
)
def flywheel_replay(run_id: int, index: int, warnings: list[str] | None = None) -> int:
    """Replay round ``index`` of run ``run_id``; returns the new run's id.

    Args:
        run_id: The run whose finished round is re-executed.
        index: The round to replay (its seed, curriculum and input checkpoint are reused).
        warnings: How the environment differs from the source round's (recorded on the
            replay; `flywheel replay` fills it in).
    """
    connect_ray()  # once, before the peers' tasks run side by side
    replay_id, peers, share_gpus = register_replay(run_id, index, warnings or [])
    with run_events(replay_id):  # OpenLineage START / COMPLETE / FAIL, when configured
        try:
            flywheel_round(
                replay_id, index, evaluate_base=False, peers=peers, share_gpus=share_gpus
            )
        except BaseException as exc:
            finish_run(replay_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        finish_run(replay_id, "succeeded")
    return replay_id
