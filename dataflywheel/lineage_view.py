"""``flywheel lineage``: a checkpoint's ancestry as a JSON document and as a rich tree.

Runs in: anywhere with a database session (the CLI, API handlers). Built on
:func:`dataflywheel.db.lineage.checkpoint_ancestry` (the recursive CTEs live there); this
module only adds each ancestor's evaluations and arranges the rows per checkpoint. It only
reads and never commits.

JSON shape of :func:`checkpoint_lineage` (times ISO 8601, unknown values ``null``)::

    {
      "checkpoint_id": int,
      "chain": [                       # depth 0 is the checkpoint asked about, 1 its parent, ...
        {"id", "depth", "parent_id", "run_id", "round_id", "round_index", "status",
         "source_uri", "digest", "created_at",
         "evaluations": [{"eval_set", "metric", "primary"}],
         "datasets": [                 # what this checkpoint was trained on
           {"id", "name", "kind", "run_id", "round_id", "round_index", "share", "rows",
            "sources": [{"role", "run_id", "round_index", "generated_by", "samples"}],
            "verifiers": [{"role", "verifier", "version", "scored", "passed", "failed",
                           "unscorable"}]}]}
      ],
      "samples_by_round": [            # training rows of the whole lineage, each dataset once
        {"run_id", "round_index", "generated_by", "samples"}]
    }

``role`` is ``chosen`` (an sft row or the chosen side of a pair) or ``rejected``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from rich.markup import escape
from rich.tree import Tree
from sqlalchemy.orm import Session

from dataflywheel.db.lineage import CheckpointAncestry, checkpoint_ancestry
from dataflywheel.db.models import Evaluation


def checkpoint_lineage(session: Session, checkpoint_id: int) -> dict[str, Any]:
    """The ancestry of ``checkpoint_id`` as plain JSON types (shape in the module docstring);
    raises :class:`dataflywheel.db.lineage.NotFound` for an unknown id."""
    ancestry = checkpoint_ancestry(session, checkpoint_id)
    return lineage_json(ancestry, _evaluations(session, [c.id for c in ancestry.chain]))


def _evaluations(session: Session, checkpoint_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    stmt = (
        sa.select(
            Evaluation.checkpoint_id,
            Evaluation.eval_set,
            Evaluation.primary_metric,
            Evaluation.primary_value,
        )
        .where(Evaluation.checkpoint_id.in_(checkpoint_ids))
        .order_by(Evaluation.id)
    )
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ckpt_id, eval_set, metric, value in session.execute(stmt):
        found[ckpt_id].append({"eval_set": eval_set, "metric": metric, "primary": value})
    return found


def lineage_json(
    ancestry: CheckpointAncestry, evaluations: dict[int, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Arrange the ancestry's flat rows per checkpoint and per dataset."""
    sources: dict[int, list[dict[str, Any]]] = defaultdict(list)
    by_round: dict[tuple[int, int, int], int] = defaultdict(int)
    for s in ancestry.sources:
        sources[s.dataset_id].append(
            {
                "role": s.role,
                "run_id": s.run_id,
                "round_index": s.round_index,
                "generated_by": s.generated_by,
                "samples": s.samples,
            }
        )
        # ancestry.sources already counts each dataset once, even when several ancestors
        # trained on it (replay), so summing here does not double count.
        by_round[(s.run_id, s.round_index, s.generated_by)] += s.samples
    verdicts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for v in ancestry.verdicts:
        verdicts[v.dataset_id].append(
            {
                "role": v.role,
                "verifier": v.verifier,
                "version": v.verifier_version,
                "scored": v.scored,
                "passed": v.passed,
                "failed": v.failed,
                "unscorable": v.unscorable,
            }
        )
    trained_on: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for d in ancestry.datasets:
        trained_on[d.checkpoint_id].append(
            {
                "id": d.dataset_id,
                "name": d.name,
                "kind": d.kind,
                "run_id": d.run_id,
                "round_id": d.round_id,
                "round_index": d.round_index,
                "share": d.share,
                "rows": d.row_count,
                "sources": sources.get(d.dataset_id, []),
                "verifiers": verdicts.get(d.dataset_id, []),
            }
        )
    chain = [
        {
            "id": c.id,
            "depth": c.depth,
            "parent_id": c.parent_id,
            "run_id": c.run_id,
            "round_id": c.round_id,
            "round_index": c.round_index,
            "status": c.status,
            "source_uri": c.source_uri,
            "digest": c.digest,
            "created_at": c.created_at.isoformat(),
            "evaluations": evaluations.get(c.id, []),
            "datasets": trained_on.get(c.id, []),
        }
        for c in ancestry.chain
    ]
    return {
        "checkpoint_id": ancestry.checkpoint_id,
        "chain": chain,
        "samples_by_round": [
            {"run_id": run, "round_index": idx, "generated_by": by, "samples": n}
            for (run, idx, by), n in sorted(by_round.items())
        ],
    }


# --------------------------------------------------------------------------- rendering


def _where(round_index: int | None) -> str:
    return "run-level" if round_index is None else f"round {round_index}"


def _checkpoint_label(c: dict[str, Any], asked: int) -> str:
    where = (
        "base model" if c["round_id"] is None else f"run {c['run_id']} {_where(c['round_index'])}"
    )
    colour = {"promoted": "green", "rejected": "red", "base": "cyan"}.get(c["status"], "yellow")
    label = f"[bold]checkpoint #{c['id']}[/] · {where} · [{colour}]{c['status']}[/]"
    if c["source_uri"]:
        label += f" · {escape(c['source_uri'])}"
    for e in c["evaluations"]:
        label += f" · {escape(e['eval_set'])} {escape(e['metric'])} {e['primary']:.3f}"
    if c["id"] != asked:
        label = f"↑ parent: {label}"
    return label


def _dataset_label(d: dict[str, Any]) -> str:
    share = f" · share {100 * d['share']:.0f}%" if d["share"] is not None else ""
    return (
        f"dataset #{d['id']} [bold]{escape(d['name'])}[/] ({d['kind']}, {_where(d['round_index'])})"
        f" · {d['rows']} rows{share}"
    )


def render_lineage(lineage: dict[str, Any]) -> Tree:
    """The chain from the checkpoint asked about down to its base model; under each
    checkpoint the datasets it trained on, where their samples came from and who passed them."""
    asked = lineage["checkpoint_id"]
    tree = Tree(f"lineage of checkpoint #{asked}", guide_style="dim")
    for c in lineage["chain"]:
        node = tree.add(_checkpoint_label(c, asked))
        if not c["datasets"] and c["round_id"] is not None:
            node.add("[dim]no training datasets recorded[/]")
        for d in c["datasets"]:
            branch = node.add(_dataset_label(d))
            if not d["sources"]:
                branch.add("[dim]no generated samples (labelled prompt rows)[/]")
            for s in d["sources"]:
                side = " (rejected side)" if s["role"] == "rejected" else ""
                branch.add(
                    f"{s['samples']} sample(s){side} from run {s['run_id']} round "
                    f"{s['round_index']}, generated by checkpoint #{s['generated_by']}"
                )
            for v in d["verifiers"]:
                side = " (rejected side)" if v["role"] == "rejected" else ""
                unscorable = f", {v['unscorable']} unscorable" if v["unscorable"] else ""
                branch.add(
                    f"{escape(v['verifier'])}@{escape(v['version'][:8])}{side}: "
                    f"{v['passed']} passed, {v['failed']} failed{unscorable}"
                )
    if lineage["samples_by_round"]:
        totals = tree.add("[bold]training samples by origin[/] (each dataset counted once)")
        for s in lineage["samples_by_round"]:
            totals.add(
                f"run {s['run_id']} round {s['round_index']}, by checkpoint "
                f"#{s['generated_by']}: {s['samples']}"
            )
    return tree
