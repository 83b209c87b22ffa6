"""Invariants of a run's rows and objects: what a correct run leaves behind, checked exactly.

Runs in: anywhere with a session (the CLI's ``flywheel check``, fault-injection tests).
Every check is a read-only SQL query; nothing here writes or commits. The expected row
counts are derived from the run's spec alone (``rounds.plan``), so a crash, a retry or a
resume that lost or doubled a row shows up as a numbered violation instead of a quietly
wrong dataset; a stored spec that no longer validates (say, one refused because its rows
could not be true) is a violation of its own. :func:`check_objects` also reads the object
store, to prove that no row points at a missing or corrupt object.

A replay run (``runs.replay_of_round_id``) holds *stub* rounds below the replayed index:
rows that stand for the source run's earlier rounds (their manifest carries
``replay_stub``); they own no samples and are checked only for their dataset and manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

from dataflywheel.rounds import plan
from dataflywheel.spec import RunSpec, format_errors
from dataflywheel.store import ObjectStore, StoreError
from dataflywheel.store.keys import digest_of_bytes
from dataflywheel.store.tree import parse_manifest

# Natural keys that make retries safe: (table, key columns, how to scope to one run).
NATURAL_KEYS: tuple[tuple[str, str, str], ...] = (
    ("rounds", "run_id, index", "t.run_id = :run"),
    ("checkpoints", "run_id, round_id, peer", "t.run_id = :run"),
    ("datasets", "run_id, round_id, name", "t.run_id = :run"),
    (
        "samples",
        "round_id, purpose, prompt_id, sample_index",
        "t.round_id IN (SELECT id FROM rounds WHERE run_id = :run)",
    ),
    (
        "scores",
        "sample_id, verifier, verifier_version",
        "t.sample_id IN (SELECT s.id FROM samples s JOIN rounds r ON r.id = s.round_id "
        "WHERE r.run_id = :run)",
    ),
    (
        "dataset_members",
        "dataset_id, position",
        "t.dataset_id IN (SELECT id FROM datasets WHERE run_id = :run)",
    ),
    (
        "stage_shards",
        "round_id, stage, shard_index",
        "t.round_id IN (SELECT id FROM rounds WHERE run_id = :run)",
    ),
    (
        "evaluations",
        "checkpoint_id, eval_set",
        "t.checkpoint_id IN (SELECT id FROM checkpoints WHERE run_id = :run)",
    ),
)


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which check, which round (if any), and what was found."""

    check: str
    detail: str
    round_index: int | None = None

    def __str__(self) -> str:
        where = f"round {self.round_index}: " if self.round_index is not None else ""
        return f"[{self.check}] {where}{self.detail}"


def _rows(session: Session, sql: str, **params: Any) -> list[sa.Row]:
    return list(session.execute(sa.text(sql), params).all())


def _scalar(session: Session, sql: str, **params: Any) -> Any:
    return session.execute(sa.text(sql), params).scalar_one()


@dataclass(frozen=True)
class Expected:
    """Row counts one round must have, derived from the spec (pure)."""

    train_samples: int
    eval_samples_if_trained: int
    baseline_samples: int
    eval_prompts: int
    warmup_rows: int | None
    train_verifiers: int


def expected_for_round(
    spec: RunSpec, index: int, band: plan.Band, *, evaluates_base: bool
) -> Expected:
    """What round ``index`` must hold, from the spec and the round's curriculum band."""
    evals = len({p.content_hash for p in plan.eval_prompts(spec)})
    per_eval = evals * spec.eval_samples_per_prompt
    warmup = index == plan.WARMUP_INDEX
    train = 0
    if not warmup:
        prompts = {p.content_hash for p in plan.train_prompts(spec, index, band)}
        train = len(prompts) * spec.generation.samples_per_prompt * spec.training.peers
    return Expected(
        train_samples=train,
        eval_samples_if_trained=per_eval,
        baseline_samples=per_eval if evaluates_base else 0,
        eval_prompts=evals,
        warmup_rows=len({p.content_hash for p in plan.warmup_prompts(spec)}) if warmup else None,
        train_verifiers=len(spec.verification.verifiers),
    )


def check_run(session: Session, run_id: int) -> list[Violation]:
    """Every database invariant of run ``run_id``; an empty list means all hold."""
    run = session.execute(
        sa.text("SELECT spec, status, replay_of_round_id FROM runs WHERE id = :r"), {"r": run_id}
    ).one_or_none()
    if run is None:
        raise LookupError(f"run {run_id} does not exist; `flywheel runs` lists the runs")
    found = check_duplicates(session, run_id)
    try:
        spec = RunSpec.model_validate(run.spec)
    except ValidationError as exc:
        # No expected counts without a valid spec, and a spec that no longer validates may
        # describe rows that cannot be true: e.g. generation.backend 'openai', whose samples
        # name as their generator checkpoints the endpoint never loaded.
        return found + [
            Violation("spec", f"the stored spec is refused: {line}") for line in format_errors(exc)
        ]
    found += check_round_set(session, run_id, spec, run.status, run.replay_of_round_id)
    rounds = _rows(
        session,
        "SELECT id, index, status, manifest FROM rounds WHERE run_id = :r ORDER BY index",
        r=run_id,
    )
    real = [r for r in rounds if not (r.manifest or {}).get("replay_stub")]
    first_real = real[0].index if real else None
    for rnd in real:
        if rnd.status != "succeeded":
            continue
        found += check_round(
            session,
            run_id,
            spec,
            rnd,
            evaluates_base=rnd.index == first_real and run.replay_of_round_id is None,
        )
    for rnd in rounds:
        if rnd.status == "succeeded":
            found += check_manifest_row(session, rnd)
    found += check_members_pass(session, run_id, spec)
    return found


def check_duplicates(session: Session, run_id: int) -> list[Violation]:
    """No natural key of the run's rows occurs twice."""
    found = []
    for table, columns, scope in NATURAL_KEYS:
        n = _scalar(
            session,
            f"SELECT count(*) FROM (SELECT {columns} FROM {table} t WHERE {scope} "
            f"GROUP BY {columns} HAVING count(*) > 1) d",
            run=run_id,
        )
        if n:
            found.append(Violation("duplicate_keys", f"{table}: {n} key(s) ({columns}) repeat"))
    return found


def check_round_set(
    session: Session, run_id: int, spec: RunSpec, status: str, replay_of: int | None
) -> list[Violation]:
    """A succeeded run has exactly its spec's rounds (a replay: its stubs and one round)."""
    if status != "succeeded":
        return []
    rows = _rows(
        session,
        "SELECT index, status, manifest ? 'replay_stub' AS stub FROM rounds WHERE run_id = :r "
        "ORDER BY index",
        r=run_id,
    )
    found = []
    if replay_of is None:
        expected = plan.round_indices(spec)
        if [r.index for r in rows] != expected:
            found.append(
                Violation("round_set", f"rounds {[r.index for r in rows]}, spec implies {expected}")
            )
    else:
        target = _scalar(session, "SELECT index FROM rounds WHERE id = :i", i=replay_of)
        real = [r.index for r in rows if not r.stub]
        if real != [target]:
            found.append(Violation("round_set", f"replay holds rounds {real}, expected [{target}]"))
    found += [
        Violation("round_status", f"status {r.status} in a succeeded run", r.index)
        for r in rows
        if r.status != "succeeded"
    ]
    return found


def _band(manifest: dict[str, Any] | None, spec: RunSpec) -> plan.Band:
    band = (manifest or {}).get("curriculum")
    return (band["min_difficulty"], band["max_difficulty"]) if band else plan.initial_band(spec)


def check_round(
    session: Session, run_id: int, spec: RunSpec, rnd: sa.Row, *, evaluates_base: bool
) -> list[Violation]:
    """Exact row counts and links of one finished round."""
    exp = expected_for_round(
        spec, rnd.index, _band(rnd.manifest, spec), evaluates_base=evaluates_base
    )
    found: list[Violation] = []

    def want(check: str, actual: Any, expected: Any, what: str) -> None:
        if actual != expected:
            found.append(Violation(check, f"{what}: {actual}, expected {expected}", rnd.index))

    counts = dict(
        _rows(
            session,
            "SELECT purpose, count(*) FROM samples WHERE round_id = :i GROUP BY purpose",
            i=rnd.id,
        )
    )
    datasets = _rows(
        session,
        "SELECT d.id, d.row_count, (SELECT count(*) FROM dataset_members m "
        "WHERE m.dataset_id = d.id) AS members FROM datasets d WHERE d.round_id = :i",
        i=rnd.id,
    )
    want("datasets", len(datasets), 1, "datasets")
    kept = datasets[0].row_count if datasets else 0
    for d in datasets:
        want("dataset_members", d.members, d.row_count, f"dataset {d.id} members vs row_count")
    if exp.warmup_rows is not None:
        want("dataset_rows", kept, exp.warmup_rows, "warm-up dataset rows")
    trained = _rows(
        session,
        "SELECT id, status, object_key, digest, parent_id, peer FROM checkpoints "
        "WHERE round_id = :i ORDER BY peer",
        i=rnd.id,
    )
    ckpt = [c for c in trained if c.peer == 0]
    want("checkpoints", len(ckpt), 1 if kept else 0, "trained checkpoints")
    want("checkpoints", len(trained) - len(ckpt), spec.training.peers - 1 if kept else 0, "peers")
    for c in trained:
        if c.object_key is None or c.digest is None or c.parent_id is None:
            found.append(
                Violation(
                    "checkpoint_weights", f"checkpoint {c.id} lacks weights or parent", rnd.index
                )
            )
        if c.status not in ("promoted", "rejected"):
            found.append(
                Violation("checkpoint_status", f"checkpoint {c.id} is {c.status}", rnd.index)
            )
    want("samples", counts.get("train", 0), exp.train_samples, "train samples")
    want(
        "samples", counts.get("eval", 0), exp.eval_samples_if_trained if ckpt else 0, "eval samples"
    )
    want("samples", counts.get("baseline", 0), exp.baseline_samples, "baseline samples")

    # Every sample scored exactly once per applicable verifier.
    bad_scores = _scalar(
        session,
        "SELECT count(*) FROM samples s WHERE s.round_id = :i AND (SELECT count(*) FROM scores x "
        "WHERE x.sample_id = s.id) <> CASE WHEN s.purpose = 'train' THEN :n ELSE 1 END",
        i=rnd.id,
        n=exp.train_verifiers,
    )
    want("scores", bad_scores, 0, "samples without exactly one score per verifier")
    # Generating checkpoints: train samples by the incumbent, eval by the round's candidate,
    # baseline by the run's base model.
    wrong_generator = _scalar(
        session,
        "SELECT count(*) FROM samples s JOIN checkpoints c ON c.id = s.checkpoint_id "
        "WHERE s.round_id = :i AND ((s.purpose = 'eval' AND c.round_id IS DISTINCT FROM :i) "
        "OR (s.purpose = 'baseline' AND c.round_id IS NOT NULL) "
        "OR (s.purpose = 'train' AND c.status NOT IN ('promoted', 'base')) OR c.run_id <> :r)",
        i=rnd.id,
        r=run_id,
    )
    want("sample_checkpoint", wrong_generator, 0, "samples linked to the wrong checkpoint")
    evaluations = _rows(
        session,
        "SELECT e.id, (SELECT count(*) FROM evaluation_results x WHERE x.evaluation_id = e.id) "
        "AS n FROM evaluations e WHERE e.round_id = :i",
        i=rnd.id,
    )
    want("evaluations", len(evaluations), len(ckpt) + int(evaluates_base), "evaluations")
    for e in evaluations:
        want("evaluation_results", e.n, exp.eval_prompts, f"evaluation {e.id} results")
    unfinished = _scalar(
        session,
        "SELECT count(*) FROM stage_shards WHERE round_id = :i AND status <> 'done'",
        i=rnd.id,
    )
    want("ledger", unfinished, 0, "unfinished shards")
    return found


def check_manifest_row(session: Session, rnd: sa.Row) -> list[Violation]:
    """A finished round has one manifest whose outputs match its rows."""
    manifest = rnd.manifest or {}
    digest = _scalar(session, "SELECT manifest_digest FROM rounds WHERE id = :i", i=rnd.id)
    if digest is None or not str(manifest.get("object_key", "")).endswith(digest):
        return [Violation("manifest", "no manifest digest / object key", rnd.index)]
    outputs = manifest.get("outputs") or {}
    actual = _rows(
        session,
        "SELECT (SELECT digest FROM datasets WHERE round_id = :i AND name = 'train'), "
        "(SELECT digest FROM checkpoints WHERE round_id = :i AND peer = 0)",
        i=rnd.id,
    )[0]
    if manifest.get("replay_stub"):
        return []  # a stub's manifest is its source round's; its rows are copies (checked there)
    found = []
    if outputs.get("dataset_digest") != actual[0]:
        found.append(
            Violation("manifest", "outputs.dataset_digest differs from the dataset row", rnd.index)
        )
    if outputs.get("checkpoint_digest") != actual[1]:
        found.append(
            Violation(
                "manifest", "outputs.checkpoint_digest differs from the checkpoint row", rnd.index
            )
        )
    return found


def check_members_pass(session: Session, run_id: int, spec: RunSpec) -> list[Violation]:
    """Every self-selected dataset member points at a sample its recipe let pass; every
    labelled member carries its prompt's reference answer."""
    found = []
    failing = _scalar(
        session,
        "SELECT count(*) FROM dataset_members m JOIN datasets d ON d.id = m.dataset_id "
        "WHERE d.run_id = :r AND m.sample_id IS NOT NULL AND d.recipe <> 'preference_pairs' AND ("
        # majority vote: the sample agreed with the majority
        "(d.recipe = 'majority_vote' AND NOT EXISTS (SELECT 1 FROM scores x WHERE "
        "x.sample_id = m.sample_id AND x.verifier = 'majority_vote' AND x.passed)) OR "
        # rejection sampling (and anything else): scored, and no verdict against it
        "(d.recipe <> 'majority_vote' AND (NOT EXISTS (SELECT 1 FROM scores x WHERE "
        "x.sample_id = m.sample_id AND x.passed) OR EXISTS (SELECT 1 FROM scores x WHERE "
        "x.sample_id = m.sample_id AND x.passed IS NOT TRUE AND (d.recipe_config->'require' "
        "IS NULL OR jsonb_typeof(d.recipe_config->'require') = 'null' "
        "OR d.recipe_config->'require' ? x.verifier)))))",
        r=run_id,
    )
    if failing:
        found.append(
            Violation("member_passing", f"{failing} dataset member(s) lack a passing score")
        )
    unscored_pairs = _scalar(
        session,
        "SELECT count(*) FROM dataset_members m JOIN datasets d ON d.id = m.dataset_id "
        "WHERE d.run_id = :r AND d.recipe = 'preference_pairs' AND (m.rejected_sample_id IS NULL "
        "OR NOT EXISTS (SELECT 1 FROM scores x WHERE x.sample_id = m.sample_id))",
        r=run_id,
    )
    if unscored_pairs:
        found.append(
            Violation("member_passing", f"{unscored_pairs} preference pair(s) unscored or half")
        )
    wrong_labels = _scalar(
        session,
        "SELECT count(*) FROM dataset_members m JOIN datasets d ON d.id = m.dataset_id "
        "JOIN prompts p ON p.id = m.prompt_id WHERE d.run_id = :r AND d.recipe = 'labelled' "
        "AND m.label IS DISTINCT FROM p.reference->>'answer'",
        r=run_id,
    )
    if wrong_labels:
        found.append(
            Violation(
                "member_label", f"{wrong_labels} labelled member(s) differ from their reference"
            )
        )
    del spec
    return found


# --- objects ------------------------------------------------------------------------------


def object_refs(session: Session, run_id: int) -> list[tuple[str, str, str | None]]:
    """(what, object key, digest the row promises) of every object the run's rows name."""
    refs: list[tuple[str, str, str | None]] = []
    for what, key, digest in _rows(
        session,
        "SELECT 'dataset ' || id, object_key, digest FROM datasets WHERE run_id = :r "
        "UNION ALL SELECT 'checkpoint ' || id, object_key, digest FROM checkpoints "
        "WHERE run_id = :r AND object_key IS NOT NULL "
        "UNION ALL SELECT 'training mix of checkpoint ' || id, training_metrics->>'mix_key', NULL "
        "FROM checkpoints WHERE run_id = :r AND training_metrics ? 'mix_key' "
        "UNION ALL SELECT 'manifest of round ' || index, manifest->>'object_key', manifest_digest "
        "FROM rounds WHERE run_id = :r AND manifest ? 'object_key' "
        "UNION ALL SELECT 'shard ' || s.stage || '/' || s.shard_index, s.output_key, NULL "
        "FROM stage_shards s JOIN rounds r ON r.id = s.round_id WHERE r.run_id = :r "
        "AND s.output_key IS NOT NULL",
        r=run_id,
    ):
        refs.append((what, key, digest))
    return refs


def check_objects(session: Session, run_id: int, store: ObjectStore) -> list[Violation]:
    """Every object a row names exists, hashes to its key, and matches the row's digest; a
    checkpoint's tree manifest lists only files that exist. (Samples and scores are rows:
    their text lives in the database, not the store.)"""
    found = []
    for what, key, digest in object_refs(session, run_id):
        try:
            data = store.get_bytes(key)  # the store recomputes the digest of what it reads
        except StoreError as exc:
            found.append(Violation("object_missing", f"{what}: {key}: {exc}"))
            continue
        if digest is not None and digest_of_bytes(data) != digest:
            found.append(Violation("object_digest", f"{what}: {key} does not hash to {digest}"))
        if what.startswith("checkpoint "):
            try:
                entries = parse_manifest(data, key)
            except StoreError as exc:
                found.append(Violation("object_tree", f"{what}: {exc}"))
                continue
            missing = [e.path for e in entries if not store.exists(e.digest)]
            if missing:
                found.append(Violation("object_missing", f"{what}: files {missing} missing"))
    return found
