"""Scoring on Ray: run the configured verifiers over a shard of samples.

Runs in: a Ray worker (CPU). Verifiers are pure and deterministic; this function only groups
a shard's samples by prompt (majority voting compares a prompt's samples with each other) and
returns plain dicts the task ingests; model-based scorers (reward model, LLM judge) go
through ``workers/model_scorers.py``. A verifier that raises fails the shard loudly: an
infrastructure error never becomes a silent zero.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import ray

from dataflywheel import faults
from dataflywheel.config import Settings
from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import build
from workers.model_scorers import ScoringModels, score_model_items


def score_items(
    verifier_configs: list[dict[str, Any]],
    prompts: dict[int, dict[str, Any]],
    samples: list[tuple[int, int, int, str]],
    models: ScoringModels | None = None,
) -> list[dict[str, Any]]:
    """Score ``samples`` ((sample_id, prompt_id, sample_index, text)) with every verifier;
    model scorers (reward model, judge) score the whole shard in batches."""
    verifiers = [build(config) for config in verifier_configs]
    batch = [v for v in verifiers if v.scope == "batch"]
    verifiers = [v for v in verifiers if v.scope != "batch"]
    by_prompt: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
    for sample_id, prompt_id, index, text in samples:
        by_prompt[prompt_id].append((index, sample_id, text))
    rows: list[dict[str, Any]] = []
    for prompt_id, group in sorted(by_prompt.items()):
        group.sort()
        prompt = Prompt(**prompts[prompt_id])
        texts = [text for _, _, text in group]
        for verifier in verifiers:
            if verifier.scope == "group":
                scores = verifier.score_group(texts, prompt)
            else:
                scores = [verifier.score(text, prompt) for text in texts]
            for (_, sample_id, _), score in zip(group, scores, strict=True):
                rows.append(
                    {
                        "sample_id": sample_id,
                        "verifier": verifier.name,
                        "verifier_version": verifier.version,
                        "value": score.value,
                        "passed": score.passed,
                        "status": score.status,
                        "reason": score.reason,
                        "details": score.details,
                    }
                )
    items = [(sid, text, Prompt(**prompts[pid])) for sid, pid, _, text in sorted(samples)]
    for verifier in batch:
        scores = score_model_items(verifier, items, models or ScoringModels())
        for (sample_id, _, _), score in zip(items, scores, strict=True):
            rows.append(
                {
                    "sample_id": sample_id,
                    "verifier": verifier.name,
                    "verifier_version": verifier.version,
                    "value": score.value,
                    "passed": score.passed,
                    "status": score.status,
                    "reason": score.reason,
                    "details": score.details,
                }
            )
    return rows


@ray.remote(num_cpus=1, max_retries=2)
def score_shard(
    verifier_configs: list[dict[str, Any]],
    prompts: dict[int, dict[str, Any]],
    samples: list[tuple[int, int, int, str]],
    models: ScoringModels | None = None,
) -> tuple[list[dict[str, Any]], str, float]:
    """Ray entry point: the score rows, the node that computed them, and the seconds spent."""
    start = time.perf_counter()
    faults.pause_point(Settings(), "score_shard")
    rows = score_items(verifier_configs, prompts, samples, models)
    return rows, ray.get_runtime_context().get_node_id(), time.perf_counter() - start
