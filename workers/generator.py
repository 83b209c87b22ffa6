"""``GeneratorWorker``: a long-lived Ray actor that holds one generation backend and model.

Runs in: Ray worker. Importing this module is safe in the flow process: torch, transformers
and vllm are imported only inside the actor (the backend factories import lazily).

The caller declares resources at creation, e.g.
``GeneratorWorker.options(num_cpus=2, num_gpus=0).remote("transformers", uri, opts, cache)``.
Models arrive as object-store tree keys: :meth:`GeneratorWorker.load` materialises the tree
once per node under ``<cache_dir>/<digest>`` (written to a temp folder, then renamed, so
actors sharing a node and a cache never see a half-written model) and reloads the backend
only when the key or dtype changes.

Health: the backend reports every decoding step to the actor (:data:`Progress`), and
:meth:`GeneratorWorker.health` — in a concurrency group of its own, so it answers while a
generate call runs — says what the actor is doing and how long ago it last produced a token
(:meth:`GeneratorWorker.stats`, in the same group, what work it answered). The driver
(``workers/driver/health.py``) declares the actor hung when that answer is late or the tokens
stop, kills it and starts a fresh one. :meth:`GeneratorWorker.probe` is a real 1-token
generation, run on a (re)started actor before it gets shards. :meth:`inject_stall` is the
fault hook the tests use to make a real backend stop producing tokens.
"""

from __future__ import annotations

import os
import shutil
import threading
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


# The default group (load, generate, probe) runs one call at a time; "health" has a thread of
# its own so health() answers while the model is busy.
@ray.remote(concurrency_groups={"health": 1})
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
        # What the default group is doing ("idle", "loading", "generating", "probing"), since
        # when, and the last time the backend produced a token (monotonic seconds).
        self._state = "idle"
        self._state_at = self._progress_at = time.monotonic()
        self._steps = 0
        self._stall_after: int | None = None  # inject_stall: steps left before stalling
        self._calls = self._requests = 0  # generate calls answered, and their requests
        self._load_seconds = 0.0  # spent in loads since the last take_load_seconds

    def _enter(self, state: str) -> None:
        self._state, self._state_at = state, time.monotonic()
        self._progress_at = self._state_at

    def _tick(self, steps: int) -> None:
        """The backend's heartbeat (:data:`Progress`), called from the generating thread."""
        if self._stall_after is not None:
            if self._stall_after <= 0:
                threading.Event().wait()  # the injected fault: no token ever again
            self._stall_after -= steps
        self._steps += steps
        self._progress_at = time.monotonic()

    def load(self, model_key: str, dtype: str) -> str:
        """Serve ``model_key`` in ``dtype`` (a no-op when already served); return the node id."""
        key = normalize_key(model_key)
        if (key, dtype) != (self.model_key, self.dtype):
            self._enter("loading")
            start = time.perf_counter()
            try:
                path = fetch_model(self.store, key, self.cache_dir)
                self.model_key = self.dtype = None  # stays unset if the load below fails
                self.backend.load(path, dtype)
                self.model_key, self.dtype, self.model_path = key, dtype, path
            finally:
                self._load_seconds += time.perf_counter() - start
                self._enter("idle")
        return self.node_id()

    def take_load_seconds(self) -> float:
        """Seconds spent loading models (store fetch and engine load) since the last call,
        which starts the count again: the generate stage records them apart from plumbing
        and from generation (bench/round_overhead.py)."""
        seconds, self._load_seconds = self._load_seconds, 0.0
        return seconds

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
        self._enter("generating")
        try:
            completions = self.backend.generate(list(requests), sampling, self._tick)
        finally:
            self._enter("idle")
        self._calls, self._requests = self._calls + 1, self._requests + len(requests)
        return completions

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
        generation; a broken backend raises (the caller sees a RayTaskError), a hung one
        never answers (the caller gives it a deadline)."""
        if self.model_key is None:
            return False
        sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=1, dtype=self.dtype)
        self._enter("probing")
        try:
            done = self.backend.generate([GenerationRequest(0, 0, 0, "1")], sampling, self._tick)
        finally:
            self._enter("idle")
        return len(done) == 1 and done[0].completion_tokens == 1

    @ray.method(concurrency_group="health")
    def health(self) -> dict[str, Any]:
        """What the model thread is doing (``state``: idle, loading, generating, probing),
        for how long (``state_s``), seconds since its last token or state change
        (``quiet_s``), and decoding steps so far. Answers while a generate call runs."""
        now = time.monotonic()
        return {
            "state": self._state,
            "state_s": now - self._state_at,
            "quiet_s": now - self._progress_at,
            "steps": self._steps,
            "node_id": self.node_id(),
            "pid": os.getpid(),
        }

    @ray.method(concurrency_group="health")
    def stats(self) -> dict[str, int]:
        """Work this actor process answered: ``generate`` calls (a stage's shards) and their
        requests; a pool's actors split a stage's shards between them."""
        return {"generate_calls": self._calls, "requests": self._requests}

    @ray.method(concurrency_group="health")
    def inject_stall(self, after_steps: int = 0) -> None:
        """Fault injection (tests, drills): after ``after_steps`` more decoding steps the
        backend blocks for good inside its generate call — the process stays alive and
        answers :meth:`health`, but produces no token again, as a wedged engine does."""
        self._stall_after = after_steps

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def loaded(self) -> tuple[str | None, str | None]:
        """The (model key, dtype) being served."""
        return self.model_key, self.dtype

    def close(self) -> None:
        """Free the model (and any engine process); the actor stays usable."""
        self.backend.close()
        self.model_key = self.dtype = None
