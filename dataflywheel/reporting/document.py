"""A run report as a JSON document: the stable, versioned schema behind ``--json``.

Runs in: anywhere (pure). What each number means is defined in
:mod:`dataflywheel.reporting.report`; this module only maps the report onto plain JSON types.
A change that renames or removes a field bumps ``SCHEMA_VERSION``; adding a field does not.

JSON schema of :func:`report_json` (``schema_version`` 1; times are ISO 8601 strings, any
unknown value is ``null``)::

    {
      "schema_version": 1,
      "run": {"id", "name", "status", "primary_metric", "rounds_planned", "warmup": bool,
              "created_at", "started_at", "finished_at"},
      "baseline": EVAL | null,
      "rounds": [{
        "index": int, "warmup": bool, "status": str,
        "started_at", "finished_at", "seconds": float | null,
        "stage_seconds": {"generate": float, "verify": ..., ...},   # as the manifest records
        "curriculum": {"min_difficulty", "max_difficulty",   # the band the round sampled
                       "decision": "start" | "climb" | "hold", "reason": str,
                       "levels": {level: float}} | null,   # accuracies the decision read
        "level_accuracy": {level: float} | null,   # this round's checkpoint, per level
        "prompts": int, "samples": int,
        "verifiers": [{"name", "version", "passed", "failed", "unscorable",
                       "pass_rate": float | null}],
        "kept": int, "seen": int | null, "yield": float | null,
        "label_accuracy": float | null,  (pseudo-labels equal to the reference: an audit)
        "filters": [{"filter", "in", "out", "yield", "removed": {reason: int}}],
        "diversity": {"rows", "unique_texts", "distinct_1", "distinct_2"} | null,
        "agreement": [{"judge", "judge_version", "verifier", "verifier_version",
                       "samples": int, "compared": int, "agree": int,
                       "rate": float | null, "kappa": float | null, "both_pass": int,
                       "both_fail": int, "judge_only": int, "verifier_only": int,
                       "unscorable": int}],   # judge-vs-verifier, where both ran
        "datasets": [{"id", "name", "kind", "rows", "stats": {...}, "label_accuracy"}],
        "training": {"checkpoint_id", "parent_id", "status", "final_loss", "steps",
                     "seconds", "rows", "dataset_ids": [int]} | null,
        "eval": EVAL | null,
        "other_evals": [EVAL],         # other eval sets / metrics of the same checkpoint
        "promoted": bool | null,       # null: no checkpoint yet, or still a candidate
        "promotion": "promoted" | "rejected" | "skipped" | null   # the gate's decision
      }],
      "summary": {"best_round": int | null, "best_primary": float | null,
                  "promoted_checkpoint_id": int | null, "promoted_primary": float | null,
                  "gain_over_baseline": float | null}
    }
    EVAL = {"evaluation_id", "checkpoint_id", "eval_set", "metric", "primary": float,
            "delta": float | null, "metrics": {...}}

``summary.promoted_*`` names the newest promoted checkpoint (the run's current model);
``gain_over_baseline`` is its primary value minus the baseline's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dataflywheel.reporting.agreement import Agreement
from dataflywheel.reporting.summaries import EvalSummary, RoundReport, RunReport

SCHEMA_VERSION = 1


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def eval_json(e: EvalSummary | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "evaluation_id": e.evaluation_id,
        "checkpoint_id": e.checkpoint_id,
        "eval_set": e.eval_set,
        "metric": e.metric,
        "primary": e.primary,
        "delta": e.delta,
        "metrics": e.metrics,
    }


def agreement_json(a: Agreement) -> dict[str, Any]:
    return {
        "judge": a.judge,
        "judge_version": a.judge_version,
        "verifier": a.verifier,
        "verifier_version": a.verifier_version,
        "samples": a.samples,
        "compared": a.compared,
        "agree": a.agree,
        "rate": a.rate,
        "kappa": a.kappa,
        "both_pass": a.both_pass,
        "both_fail": a.both_fail,
        "judge_only": a.judge_only,
        "verifier_only": a.verifier_only,
        "unscorable": a.unscorable,
    }


def _round_json(r: RoundReport) -> dict[str, Any]:
    t = r.training
    return {
        "index": r.index,
        "warmup": r.warmup,
        "status": r.status,
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
        "seconds": r.seconds,
        "stage_seconds": r.stage_seconds,
        "curriculum": r.curriculum,
        "level_accuracy": r.level_accuracy,
        "prompts": r.prompts,
        "samples": r.samples,
        "verifiers": [
            {
                "name": v.name,
                "version": v.version,
                "passed": v.passed,
                "failed": v.failed,
                "unscorable": v.unscorable,
                "pass_rate": v.pass_rate,
            }
            for v in r.verifiers
        ],
        "kept": r.kept,
        "seen": r.seen,
        "yield": r.yield_,
        "label_accuracy": r.label_accuracy,
        "filters": r.filters,
        "diversity": r.diversity,
        "agreement": [agreement_json(a) for a in r.agreement],
        "datasets": [
            {
                "id": d.id,
                "name": d.name,
                "kind": d.kind,
                "rows": d.rows,
                "stats": d.stats,
                "label_accuracy": d.label_accuracy,
            }
            for d in r.datasets
        ],
        "training": None
        if t is None
        else {
            "checkpoint_id": t.checkpoint_id,
            "parent_id": t.parent_id,
            "status": t.status,
            "final_loss": t.final_loss,
            "steps": t.steps,
            "seconds": t.seconds,
            "rows": t.rows,
            "dataset_ids": list(t.dataset_ids),
        },
        "eval": eval_json(r.eval),
        "other_evals": [eval_json(e) for e in r.other_evals],
        "promoted": r.promoted,
        "promotion": r.promotion,
    }


def report_json(report: RunReport) -> dict[str, Any]:
    """The report as plain JSON types, in the schema the module docstring documents."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "id": report.id,
            "name": report.name,
            "status": report.status,
            "primary_metric": report.primary_metric,
            "rounds_planned": report.rounds_planned,
            "warmup": report.warmup,
            "created_at": _iso(report.created_at),
            "started_at": _iso(report.started_at),
            "finished_at": _iso(report.finished_at),
        },
        "baseline": eval_json(report.baseline),
        "rounds": [_round_json(r) for r in report.rounds],
        "summary": report.summary(),
    }
