"""Model-based scorers on Ray: load the reward model or the judge, score a shard in batches.

Runs in: a Ray worker (called by ``workers/verify.py``'s ``score_shard``). The scorers'
pure parts live in ``dataflywheel/verifiers/`` (``reward_model.py``, ``judge.py``); this
module holds what they cannot: fetching model trees from the object store into the node's
model cache (pinned while a scorer reads them), building a generation backend for the judge,
and, for ``llm_judge`` with ``model: current``, judging each sample with the checkpoint that
generated it (``ScoringModels.sample_models``).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataflywheel.generation import GenerationRequest, SamplingConfig, make_backend
from dataflywheel.prompts import Prompt
from dataflywheel.verifiers import Score
from dataflywheel.verifiers.judge import CURRENT, JudgeVerifier
from dataflywheel.verifiers.reward_model import URI_PREFIXES, RewardModelVerifier


@dataclass(frozen=True)
class ScoringModels:
    """Where model scorers find their weights: the object store (for ``store:``
    keys and checkpoints) and, per sample, the key of the checkpoint that generated it."""

    store_uri: str | None = None
    store_options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    sample_models: dict[int, str] = field(default_factory=dict)

    @contextlib.contextmanager
    def folder(self, model: str) -> Iterator[Path]:
        """A local folder for a model reference while the block runs: fetched from the store
        into the node's model cache when a key, and pinned there until the block ends."""
        if not model.startswith(URI_PREFIXES):
            path = Path(model)
            if not path.is_dir():
                raise FileNotFoundError(
                    f"model folder {model!r} does not exist; fix the verifier's model field"
                )
            yield path
            return
        if self.store_uri is None or self.cache_dir is None:
            raise RuntimeError(f"model {model!r} is a store key but no store was given")
        from dataflywheel.store import open_store
        from workers.model_cache import ModelCache

        store = open_store(self.store_uri, **(self.store_options or {}))
        cache = ModelCache.from_settings(Path(self.cache_dir))
        with cache.acquire(store, model.removeprefix("store:")) as path:
            yield path


Item = tuple[int, str, Prompt]  # (sample id, completion, prompt)


def _judge_generate(verifier: JudgeVerifier, folder: Path | None) -> Any:
    c = verifier.config
    options = {"base_url": c.base_url, "model_name": c.model_name} if c.backend == "openai" else {}
    backend = make_backend(c.backend, **options)
    backend.load(folder or Path("."), c.dtype)
    sampling = SamplingConfig(
        temperature=c.temperature, top_p=1.0, max_tokens=c.max_tokens, dtype=c.dtype
    )

    def generate(texts: list[str]) -> list[str]:
        requests = [
            GenerationRequest(
                prompt_id=i,
                sample_index=0,
                seed=int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big") >> 1,
                prompt=t,
            )
            for i, t in enumerate(texts)
        ]
        return [done.text for done in backend.generate(requests, sampling)]

    return generate, backend


def score_model_items(verifier: Any, items: Sequence[Item], models: ScoringModels) -> list[Score]:
    """Scores of ``items`` by a batch scorer, in item order."""
    if isinstance(verifier, RewardModelVerifier):
        if not verifier.config.model.startswith(URI_PREFIXES):
            return verifier.score_batch([c for _, c, _ in items], [p for _, _, p in items])
        with models.folder(verifier.config.model) as path:
            verifier.model_dir = path
            return verifier.score_batch([c for _, c, _ in items], [p for _, _, p in items])
    if not isinstance(verifier, JudgeVerifier):
        raise TypeError(f"not a model scorer: {verifier.name}")
    config = verifier.config
    # Group the items by the judge model that grades them (one per generating checkpoint
    # for model: current), so each model is loaded once per shard.
    groups: dict[str | None, list[int]] = defaultdict(list)
    for position, (sample_id, _, _) in enumerate(items):
        if config.backend == "openai":
            groups[None].append(position)
        elif config.model == CURRENT:
            if sample_id not in models.sample_models:
                raise RuntimeError(
                    f"llm_judge model 'current': sample {sample_id} has no generating "
                    "checkpoint with weights in the store"
                )
            groups[models.sample_models[sample_id]].append(position)
        else:
            groups[config.model].append(position)
    scores: list[Score | None] = [None] * len(items)
    for model, positions in groups.items():
        with contextlib.ExitStack() as stack:
            folder = stack.enter_context(models.folder(model)) if model else None
            generate, backend = _judge_generate(verifier, folder)
            stack.callback(backend.close)
            chunk = [items[i] for i in positions]
            judged = verifier.score_batch(
                [c for _, c, _ in chunk], [p for _, _, p in chunk], generate
            )
        for position, score in zip(positions, judged, strict=True):
            scores[position] = score
    return [s for s in scores if s is not None]
