"""Selection stage: turn scored samples (or labelled prompts) into the round's dataset file.

Runs in: Prefect task (flow process). The recipe (``dataflywheel.recipes``) is pure; this task
reads candidates from the database (``dataflywheel.db.samples``), writes the dataset as
canonical JSONL (``dataflywheel.prompts.canonical_jsonl``) into the object store
(content-addressed, so a rerun writes the same key) and records the dataset with one member
row per line. The warm-up round's dataset is the labelled prompts' references.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dataflywheel import faults, recipes
from dataflywheel.db import checkpoints, queries, samples
from dataflywheel.prompts import canonical_jsonl
from dataflywheel.recipes import filters
from dataflywheel.rounds import plan
from dataflywheel.spec import RunSpec, derive_seed
from dataflywheel.verifiers import Score as VerifierScore
from dataflywheel.verifiers.answers import extract_answer
from tasks import context


def _answer(text: str, scores: dict[str, VerifierScore], spec: RunSpec) -> str | None:
    majority = scores.get("majority_vote")
    if majority is not None and majority.status == "scored":
        return majority.details.get("answer")
    for config in spec.verification.verifiers:
        extract = getattr(config, "extract", None)
        if extract is not None:
            return extract_answer(text, extract, getattr(config, "strict", False))
    return text.strip() or None


def _labelled(spec: RunSpec, session: Any) -> tuple[list[dict], list[dict], dict, str]:
    refs = samples.register_prompts(session, plan.warmup_prompts(spec))
    rows, members = [], []
    for position, ref in enumerate(refs):
        reference = ref.prompt.reference or {}
        # Code prompts (HumanEval) are labelled by their canonical solution.
        answer = str(
            reference["answer"] if "answer" in reference else reference["canonical_solution"]
        )
        rows.append({"prompt": ref.prompt.text, "completion": answer, "prompt_id": ref.id})
        members.append({"position": position, "prompt_id": ref.id, "label": answer})
    stats = {"recipe": "labelled", "seen": len(refs), "kept": len(refs), "yield": 1.0}
    return rows, members, stats, "labelled"


def _selected(spec: RunSpec, session: Any, round_id: int, index: int):
    drawn = samples.selection_samples(session, round_id)
    scores: dict[int, dict[str, VerifierScore]] = defaultdict(dict)
    for row in samples.selection_scores(session, round_id, plan.verifier_versions(spec)):
        scores[row.sample_id][row.verifier] = VerifierScore(
            value=row.value,
            passed=row.passed,
            status=row.status,
            reason=row.reason or "",
            details=row.details,
        )
    prompts = {p.id: p for p in samples.prompts_by_id(session, [s.prompt_id for s in drawn])}
    # The recipes see each prompt by its content hash, not its row id: they order prompts and
    # seed per-prompt draws by it, and row ids depend on which task inserted a prompt first
    # (two runs of one spec in fresh databases must select the same rows).
    key = {pid: p.content_hash for pid, p in prompts.items()}
    row_id = {h: pid for pid, h in key.items()}
    candidates = [
        recipes.Candidate(
            sample_id=s.id,
            prompt_id=key[s.prompt_id],
            sample_index=s.sample_index,
            text=s.text,
            answer=_answer(s.text, scores[s.id], spec),
            scores=scores[s.id],
            source=s.peer,
        )
        for s in drawn
    ]
    result = recipes.select(
        candidates,
        spec.selection,
        seed=derive_seed(spec.seed, "select", index),
        facts={key[pid]: recipes.PromptFacts.from_metadata(p.meta) for pid, p in prompts.items()},
    )
    # Data filters (dedup, decontamination against the run's eval prompts, length, format)
    # run after the recipe; their per-filter yields go into datasets.stats.
    filter_configs = spec.selection.filters
    needs_eval = any(f.kind == "decontaminate" for f in filter_configs)
    result = filters.apply_filters(
        result,
        filter_configs,
        filters.FilterContext(
            prompt_texts={key[pid]: p.text for pid, p in prompts.items()},
            eval_texts=[p.text for p in plan.eval_prompts(spec)] if needs_eval else (),
        ),
    )
    rows, members = [], []
    for position, row in enumerate(result.rows):
        prompt_id = row_id[row.prompt_id]
        prompt_text = prompts[prompt_id].text
        if isinstance(row, recipes.PreferencePair):
            rows.append(
                {"prompt": prompt_text, "chosen": row.chosen_text, "rejected": row.rejected_text}
            )
            members.append(
                {
                    "position": position,
                    "sample_id": row.chosen_sample_id,
                    "rejected_sample_id": row.rejected_sample_id,
                    "prompt_id": prompt_id,
                }
            )
        else:
            rows.append({"prompt": prompt_text, "completion": row.text})
            members.append(
                {
                    "position": position,
                    "sample_id": row.sample_id,
                    "prompt_id": prompt_id,
                    "label": row.label,
                }
            )
    return rows, members, result.stats.as_dict(), spec.selection.recipe


@task(
    name="select_dataset",
    retries=2,
    retry_delay_seconds=5,
    persist_result=False,
    cache_policy=NO_CACHE,
)
def select_dataset(round_id: int) -> int:
    """Select the round's training data; returns the dataset id."""
    with context.session() as session:
        rnd = queries.get_round(session, round_id)
        run_id, index = rnd.run_id, rnd.index
        spec = queries.run_spec(session, run_id)
        existing = checkpoints.round_dataset(session, round_id, plan.TRAIN_DATASET)
        if existing is not None:
            return existing.id
        if index == plan.WARMUP_INDEX:
            rows, members, stats, recipe = _labelled(spec, session)
        else:
            rows, members, stats, recipe = _selected(spec, session, round_id, index)
    kind = "preference" if recipe == "preference_pairs" else "sft"
    ref = context.store().put_bytes(canonical_jsonl([_public(r) for r in rows]))
    faults.pause_point(context.settings(), "select", index)
    with context.session() as session:
        return checkpoints.ensure_dataset(
            session,
            run_id=run_id,
            round_id=round_id,
            name=plan.TRAIN_DATASET,
            kind=kind,
            recipe=recipe,
            recipe_config=None if recipe == "labelled" else spec.selection.model_dump(mode="json"),
            digest=ref.digest,
            object_key=ref.key,
            row_count=len(rows),
            stats=stats,
            members=members,
        )


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """The row as the trainer reads it (ids stay in dataset_members, not in the file)."""
    return {k: v for k, v in row.items() if k != "prompt_id"}
