"""The driver's side of scoring: how many shards go out at once, and what model scorers need.

Runs in: the flow process, as the Ray driver (the ``score_samples`` and ``rescore_samples``
Prefect tasks). Both send shards of whole prompts (``dataflywheel.rounds.shards``) to
``workers.verify.score_shard`` through ``sharded.submit_sharded``, ``MAX_IN_FLIGHT`` at a
time; model scorers (a reward model, an LLM judge) also get the object store's address and,
for a judge of the generating model, each sample's checkpoint (:func:`scoring_models`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from dataflywheel.db import samples
from dataflywheel.verifiers import MODEL_SCORERS
from workers.driver import placement

if TYPE_CHECKING:
    from workers.model_scorers import ScoringModels

MAX_IN_FLIGHT = 4  # scoring shards submitted at once


def scoring_models(
    session: Session, configs: list[dict[str, Any]], sample_ids: list[int]
) -> ScoringModels | None:
    """What model scorers need on the worker (store access; for a judge with ``model:
    current``, each sample's generating checkpoint key); None without model scorers."""
    from workers.model_scorers import ScoringModels

    if not any(c["name"] in MODEL_SCORERS for c in configs):
        return None
    sample_models: dict[int, str] = {}
    if any(c["name"] == "llm_judge" and c.get("model", "current") == "current" for c in configs):
        sample_models = samples.generating_checkpoints(session, sample_ids)
    store_uri, store_options, cache_dir = placement.store_args()
    return ScoringModels(store_uri, store_options, cache_dir, sample_models)
