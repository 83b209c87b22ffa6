"""How the flywheel appears in OpenLineage: job names, dataset names and run ids.

Runs in: anywhere (pure). Names follow the database's own identities (run id, round index,
purpose, peer), never a timestamp or a row id of a table other than ``runs``, so the same
round always gets the same names and the names chain across rounds: round K's ``train``
output ``run-7/round-K/checkpoint`` is the very dataset round K+1's ``generate`` reads (when
it was promoted). docs/openlineage.md lists them all.
"""

from __future__ import annotations

import uuid
from datetime import datetime

# The stages of a round as OpenLineage jobs, each with the sentence its job's documentation
# facet carries. ``evaluate_baseline`` is the base model's evaluation in a run's first round.
STAGES: dict[str, str] = {
    "generate": "Draw the round's training samples with the promoted checkpoint (each peer's).",
    "verify": "Score the round's training samples with the spec's verifiers.",
    "select": "Select the round's training dataset from the scored samples (warm-up: the "
    "labelled references).",
    "train": "Train the round's candidate checkpoint (and its peers) on the training mix.",
    "evaluate": "Generate and score held-out samples with the candidate, and record its metrics.",
    "evaluate_baseline": "Generate and score held-out samples with the run's base model, and "
    "record its metrics (the first round's baseline).",
    "promote": "Gate the candidate against the incumbent: promote or reject it.",
}

SAMPLE_PURPOSES = ("train", "eval", "baseline")


def run_job(run_id: int) -> str:
    """The job of a whole run: ``run-7``."""
    return f"run-{run_id}"


def round_job(run_id: int, index: int) -> str:
    """The job of one round, below its run's: ``run-7.round-2``."""
    return f"{run_job(run_id)}.round-{index}"


def stage_job(run_id: int, index: int, stage: str) -> str:
    """The job of one stage of a round, below the round's: ``run-7.round-2.generate``. One job
    per round and stage (not per stage of the run): a job's inputs and outputs are those of
    its latest run, so per-round jobs keep every round's edges in a lineage graph."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {sorted(STAGES)}")
    return f"{round_job(run_id, index)}.{stage}"


def prompt_set_dataset(prompt_set: str, split: str) -> str:
    """A prompt set's split, shared by every run that draws from it: ``prompts/addition/train``."""
    return f"prompts/{prompt_set}/{split}"


def _round(run_id: int, index: int) -> str:
    return f"run-{run_id}/round-{index}"


def samples_dataset(run_id: int, index: int, purpose: str) -> str:
    """A round's samples of one purpose: ``run-7/round-2/samples/train``."""
    if purpose not in SAMPLE_PURPOSES:
        raise ValueError(f"unknown sample purpose {purpose!r}; one of {SAMPLE_PURPOSES}")
    return f"{_round(run_id, index)}/samples/{purpose}"


def scores_dataset(run_id: int, index: int, purpose: str) -> str:
    """The verifiers' scores of those samples: ``run-7/round-2/scores/train``."""
    return samples_dataset(run_id, index, purpose).replace("/samples/", "/scores/")


def training_dataset(run_id: int, index: int, name: str) -> str:
    """A round's selected dataset (``datasets.name``): ``run-7/round-2/dataset/train``."""
    return f"{_round(run_id, index)}/dataset/{name}"


def checkpoint_dataset(run_id: int, index: int | None, peer: int = 0) -> str:
    """A checkpoint, named by the round that trained it (``index`` None: the run's base model):
    ``run-7/round-2/checkpoint``, ``run-7/base/checkpoint``; a peer's ends in ``/peer-1``."""
    where = f"run-{run_id}/base" if index is None else _round(run_id, index)
    return f"{where}/checkpoint" + (f"/peer-{peer}" if peer else "")


def evaluation_dataset(run_id: int, index: int | None, eval_set: str) -> str:
    """A checkpoint's evaluation on an eval set: ``run-7/round-2/evaluation/heldout``."""
    where = f"run-{run_id}/base" if index is None else _round(run_id, index)
    return f"{where}/evaluation/{eval_set}"


def run_uuid(namespace: str, run_id: int, created_at: datetime) -> str:
    """The OpenLineage run id of a flywheel run. Derived, so a resumed run (another process,
    days later) reports under the same id; the creation time keeps two databases' run 7
    apart."""
    key = f"dataflywheel:{namespace}:run-{run_id}:{created_at.isoformat()}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def round_uuid(run: str, index: int) -> str:
    """The OpenLineage run id of round ``index`` of the run whose id is ``run``: derived from
    it, so a retried or resumed round reports under the same id."""
    return str(uuid.uuid5(uuid.UUID(run), f"round-{index}"))
