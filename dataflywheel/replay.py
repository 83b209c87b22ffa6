"""Planning a deterministic replay of one round, and comparing two rounds.

Runs in: anywhere with a session (the CLI, the replay task). Nothing here writes: a replay
is planned from the source round's manifest and rows, every input it needs is proven present
in the object store, and only then does ``tasks.replay`` create the new run. The new run
holds *stub* rounds that stand for the source run's earlier rounds (same datasets, same
checkpoints, same evaluations, by object key and digest), so the unchanged
``flywheel_round`` picks exactly the source round's input checkpoint, training mix and
promotion baseline. See ``docs/replay.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataflywheel.db.models import (
    Checkpoint,
    CheckpointDataset,
    Dataset,
    DatasetMember,
    Evaluation,
    Round,
    Run,
    Sample,
)
from dataflywheel.prompts import canonical_json, sha256_hex
from dataflywheel.store import ObjectStore, StoreError
from dataflywheel.store.tree import read_tree


class ReplayError(ValueError):
    """A replay cannot start; the message says which input and what to do."""


@dataclass(frozen=True)
class ReplayPlan:
    """Everything a replay of round ``index`` of run ``source_run_id`` copies and checks."""

    source_run_id: int
    source_round_id: int
    index: int
    spec: dict[str, Any]
    spec_hash: str
    name: str
    round_seed: int
    curriculum: dict[str, Any] | None
    manifest: dict[str, Any]
    earlier_rounds: list[Round]
    checkpoints: list[Checkpoint]  # base first, then earlier rounds' checkpoints by index
    datasets: list[Dataset]  # earlier rounds' datasets
    required_objects: list[tuple[str, str]] = field(default_factory=list)  # (what, key)


def plan_replay(session: Session, run_id: int, index: int) -> ReplayPlan:
    """Read what replaying round ``index`` of run ``run_id`` needs; raise ``ReplayError`` /
    ``LookupError`` when the round cannot be replayed."""
    run = session.get(Run, run_id)
    if run is None:
        raise LookupError(f"run {run_id} does not exist; `flywheel runs` lists the runs")
    rnd = session.execute(
        sa.select(Round).where(Round.run_id == run_id, Round.index == index)
    ).scalar_one_or_none()
    if rnd is None:
        have = session.execute(
            sa.select(Round.index).where(Round.run_id == run_id).order_by(Round.index)
        ).scalars()
        raise ReplayError(
            f"run {run_id} has no round {index} (it has rounds {list(have)}); "
            "pick one with `flywheel report RUN_ID`"
        )
    if rnd.status != "succeeded" or not rnd.manifest or not rnd.manifest_digest:
        raise ReplayError(
            f"run {run_id} round {index} is {rnd.status} and has no manifest: only a finished "
            f"round can be replayed (`flywheel resume {run_id}` finishes it)"
        )
    if rnd.manifest.get("replay_stub"):
        raise ReplayError(
            f"run {run_id} round {index} is a stand-in copied from run "
            f"{rnd.manifest['replay_stub']['source_run_id']}; replay that run's round instead"
        )
    earlier = list(
        session.execute(
            sa.select(Round)
            .where(Round.run_id == run_id, Round.index < index)
            .order_by(Round.index)
        ).scalars()
    )
    unfinished = [r.index for r in earlier if r.status != "succeeded"]
    if unfinished:
        raise ReplayError(f"run {run_id}: earlier rounds {unfinished} did not finish")
    earlier_ids = [r.id for r in earlier]
    checkpoints = list(
        session.execute(
            sa.select(Checkpoint)
            .outerjoin(Round, Round.id == Checkpoint.round_id)
            .where(
                Checkpoint.run_id == run_id,
                Checkpoint.round_id.is_(None) | Checkpoint.round_id.in_(earlier_ids),
            )
            .order_by(Round.index.nulls_first(), Checkpoint.peer)
        ).scalars()
    )
    datasets = list(
        session.execute(
            sa.select(Dataset)
            .join(Round, Round.id == Dataset.round_id)
            .where(Dataset.round_id.in_(earlier_ids))
            .order_by(Round.index, Dataset.name)
        ).scalars()
    )
    required = [(f"manifest of round {index}", rnd.manifest["object_key"])]
    for c in checkpoints:
        if c.object_key is None:
            raise ReplayError(f"checkpoint {c.id} of run {run_id} has no weights in the store")
        required.append((f"checkpoint {c.id} weights", c.object_key))
    required += [(f"dataset {d.id} ({d.name})", d.object_key) for d in datasets]
    return ReplayPlan(
        source_run_id=run_id,
        source_round_id=rnd.id,
        index=index,
        spec=run.spec,
        spec_hash=run.spec_hash,
        name=run.name,
        round_seed=rnd.seed,
        curriculum=rnd.manifest.get("curriculum"),
        manifest=rnd.manifest,
        earlier_rounds=earlier,
        checkpoints=checkpoints,
        datasets=datasets,
        required_objects=required,
    )


def require_inputs(plan: ReplayPlan, store: ObjectStore) -> None:
    """Prove every input object (and every file of every checkpoint tree) is in the store."""
    missing = []
    for what, key in plan.required_objects:
        try:
            if not store.exists(key):
                missing.append(f"{what} ({key})")
            elif what.startswith("checkpoint "):
                gone = [e.path for e in read_tree(store, key) if not store.exists(e.digest)]
                missing += [f"{what}: file {p}" for p in gone]
        except StoreError as exc:
            missing.append(f"{what} ({key}): {exc}")
    if missing:
        raise ReplayError(
            f"cannot replay run {plan.source_run_id} round {plan.index}: inputs no longer in "
            f"the object store {store.uri}: {'; '.join(missing)}. Restore them (`flywheel store "
            "put`) or point FLYWHEEL_STORE_URI at the store the run used; nothing was written"
        )


def version_mismatches(
    manifest: dict[str, Any],
    *,
    code: dict[str, Any],
    packages: dict[str, str],
    verifiers: dict[str, str],
    spec_hash: str,
) -> list[str]:
    """Differences between the environment now and the one that ran the round (pure)."""
    out = []
    if manifest.get("spec_hash") != spec_hash:
        out.append(f"spec hash {manifest.get('spec_hash')} -> {spec_hash}")
    for name, now in sorted(code.items()):
        then = (manifest.get("code") or {}).get(name)
        if then != now:
            out.append(f"code {name}: {then} -> {now}")
    then_packages = manifest.get("packages") or {}
    for name in sorted(set(then_packages) | set(packages)):
        if then_packages.get(name) != packages.get(name):
            out.append(f"package {name}: {then_packages.get(name)} -> {packages.get(name)}")
    then_verifiers = manifest.get("verifiers") or {}
    for name in sorted(set(then_verifiers) | set(verifiers)):
        if then_verifiers.get(name) != verifiers.get(name):
            out.append(f"verifier {name}: {then_verifiers.get(name)} -> {verifiers.get(name)}")
    return out


# --- comparing two rounds -----------------------------------------------------------------


def round_fingerprint(session: Session, run_id: int, index: int) -> dict[str, Any]:
    """What a round produced, as digests and metrics (comparable across runs and databases)."""
    rnd = session.execute(
        sa.select(Round).where(Round.run_id == run_id, Round.index == index)
    ).scalar_one_or_none()
    if rnd is None:
        raise LookupError(f"run {run_id} has no round {index}; `flywheel report {run_id}`")
    from dataflywheel.db.models import Prompt

    samples = session.execute(
        sa.select(
            Sample.purpose, Prompt.content_hash, Sample.sample_index, Sample.seed, Sample.text
        )
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .where(Sample.round_id == rnd.id)
        .order_by(Sample.purpose, Prompt.content_hash, Sample.sample_index)
    ).all()
    by_purpose: dict[str, list[Any]] = {}
    for purpose, *rest in samples:
        by_purpose.setdefault(purpose, []).append(rest)
    dataset = session.execute(
        sa.select(Dataset).where(Dataset.round_id == rnd.id, Dataset.name == "train")
    ).scalar_one_or_none()
    checkpoint = session.execute(
        sa.select(Checkpoint).where(Checkpoint.round_id == rnd.id, Checkpoint.peer == 0)
    ).scalar_one_or_none()
    evaluation = (
        session.execute(
            sa.select(Evaluation).where(Evaluation.checkpoint_id == checkpoint.id)
        ).scalar_one_or_none()
        if checkpoint
        else None
    )
    parent = (
        session.get(Checkpoint, checkpoint.parent_id)
        if checkpoint and checkpoint.parent_id
        else None
    )
    metrics = dict(evaluation.metrics) if evaluation else {}
    return {
        "run_id": run_id,
        "round": index,
        "status": rnd.status,
        "seed": rnd.seed,
        "spec_hash": (rnd.manifest or {}).get("spec_hash"),
        "samples": {p: len(rows) for p, rows in sorted(by_purpose.items())},
        "samples_digest": {
            p: sha256_hex(canonical_json(rows)) for p, rows in sorted(by_purpose.items())
        },
        "dataset_digest": dataset.digest if dataset else None,
        "dataset_rows": dataset.row_count if dataset else None,
        "input_checkpoint_digest": parent.digest if parent else None,
        "checkpoint_digest": checkpoint.digest if checkpoint else None,
        "checkpoint_status": checkpoint.status if checkpoint else None,
        "primary": evaluation.primary_value if evaluation else None,
        "metrics": metrics,
    }


def diff_fingerprints(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, a, b) for every compared field; identity fields (run id) are left out."""
    keys = [k for k in a if k not in ("run_id",)]
    rows = []
    for key in keys:
        if isinstance(a[key], dict) and key != "metrics":
            for sub in sorted(set(a[key]) | set(b.get(key, {}))):
                rows.append((f"{key}.{sub}", a[key].get(sub), b.get(key, {}).get(sub)))
        else:
            rows.append((key, a[key], b.get(key)))
    return rows


def copied_members(session: Session, dataset_id: int) -> list[dict[str, Any]]:
    """A dataset's member rows as dicts, for a stub copy (they keep pointing at the source
    run's samples and prompts: the copy is the same data, not new data)."""
    return [
        {
            "position": m.position,
            "sample_id": m.sample_id,
            "rejected_sample_id": m.rejected_sample_id,
            "prompt_id": m.prompt_id,
            "label": m.label,
        }
        for m in session.execute(
            sa.select(DatasetMember)
            .where(DatasetMember.dataset_id == dataset_id)
            .order_by(DatasetMember.position)
        ).scalars()
    ]


def training_links(session: Session, checkpoint_ids: list[int]) -> list[CheckpointDataset]:
    return list(
        session.execute(
            sa.select(CheckpointDataset).where(CheckpointDataset.checkpoint_id.in_(checkpoint_ids))
        ).scalars()
    )
