"""``GeneratorWorker``: a long-lived Ray actor that holds one generation backend and model.

Runs in: Ray worker. Importing this module is safe in the flow process: torch, transformers
and vllm are imported only inside the actor (the backend factories import lazily).

The caller declares resources at creation, e.g.
``GeneratorWorker.options(num_cpus=2, num_gpus=0).remote("transformers", uri, opts, cache)``.
Models arrive as object-store tree keys: :meth:`GeneratorWorker.load` materialises the tree
once per node under ``<cache_dir>/<digest>`` (written to a temp folder, then renamed, so
actors sharing a node and a cache never see a half-written model) and reloads the backend
only when the key or dtype changes.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from dataflywheel.generation import (
    Completion,
    GenerationBackend,
    GenerationRequest,
    SamplingConfig,
    make_backend,
)
from dataflywheel.generation.prompt_format import PromptFormat
from dataflywheel.store import ObjectStore, digest_of_key, normalize_key, open_store


def fetch_model(store: ObjectStore, model_key: str, cache_dir: Path) -> Path:
    """The local folder of the model tree ``model_key``, fetched into ``cache_dir`` once."""
    key = normalize_key(model_key)
    final = Path(cache_dir) / digest_of_key(key)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.parent / f".partial-{final.name}-{uuid.uuid4().hex}"
    try:
        store.get_tree(key, partial)
        try:
            os.rename(partial, final)
        except OSError:
            if not final.is_dir():  # not another actor winning the race: a real error
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final


@ray.remote
class GeneratorWorker:
    """Keeps a backend (``"transformers"``, ``"vllm"``, ...) and its model alive."""

    def __init__(
        self,
        backend: str,
        store_uri: str,
        store_options: dict[str, Any],
        cache_dir: str,
        backend_options: dict[str, Any] | None = None,
    ) -> None:
        self.store = open_store(store_uri, **(store_options or {}))
        self.cache_dir = Path(cache_dir)
        self.backend: GenerationBackend = make_backend(backend, **(backend_options or {}))
        self.model_key: str | None = None
        self.dtype: str | None = None
        self.model_path: Path | None = None

    def load(self, model_key: str, dtype: str) -> str:
        """Serve ``model_key`` in ``dtype`` (a no-op when already served); return the node id."""
        key = normalize_key(model_key)
        if (key, dtype) != (self.model_key, self.dtype):
            path = fetch_model(self.store, key, self.cache_dir)
            self.model_key = self.dtype = None  # stays unset if the load below fails
            self.backend.load(path, dtype)
            self.model_key, self.dtype, self.model_path = key, dtype, path
        return self.node_id()

    def apply_chat_template(self, prompts: Sequence[str]) -> list[str]:
        """Each prompt as a user turn in the loaded model's chat template, ready for the
        assistant's reply (the exact text the model is then fed)."""
        return self.render_prompts(prompts, PromptFormat(chat_template=True))

    def render_prompts(self, prompts: Sequence[str], prompt_format: PromptFormat) -> list[str]:
        """The exact text the loaded model is fed for each prompt under ``prompt_format``
        (few-shot exemplars, chat template; see ``generation/prompt_format.py``)."""
        if self.model_path is None:
            raise RuntimeError("GeneratorWorker has no model: call load(model_key, dtype) first")
        tokenizer = None
        if prompt_format.needs_tokenizer:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        try:
            return prompt_format.render(prompts, tokenizer)
        except ValueError as exc:
            raise ValueError(f"model {self.model_key}: {exc}") from None

    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig
    ) -> list[Completion]:
        """Completions of ``requests`` from the loaded model, in request order."""
        if self.model_key is None:
            raise RuntimeError("GeneratorWorker has no model: call load(model_key, dtype) first")
        if sampling.dtype != self.dtype:
            self.load(self.model_key, sampling.dtype)
        return self.backend.generate(list(requests), sampling)

    def generate_timed(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig
    ) -> tuple[list[Completion], float]:
        """:meth:`generate` plus the seconds the backend spent, so callers can tell model
        compute from plumbing (bench/round_overhead.py)."""
        start = time.perf_counter()
        completions = self.generate(requests, sampling)
        return completions, time.perf_counter() - start

    def probe(self) -> bool:
        """Health check: False with no model loaded, True after a real 1-token greedy
        generation; a broken backend raises (the caller sees a RayTaskError)."""
        if self.model_key is None:
            return False
        sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=1, dtype=self.dtype)
        done = self.backend.generate([GenerationRequest(0, 0, 0, "1")], sampling)
        return len(done) == 1 and done[0].completion_tokens == 1

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def loaded(self) -> tuple[str | None, str | None]:
        """The (model key, dtype) being served."""
        return self.model_key, self.dtype

    def close(self) -> None:
        """Free the model (and any engine process); the actor stays usable."""
        self.backend.close()
        self.model_key = self.dtype = None
