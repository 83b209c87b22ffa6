"""``GeneratorWorker``: a long-lived Ray actor that holds one generation backend and model.

Runs in: Ray worker. Importing this module is safe in the flow process: torch, transformers
and vllm are imported only inside the actor (the backend factories import lazily).

The caller declares resources at creation, e.g.
``GeneratorWorker.options(num_cpus=2, num_gpus=0).remote("transformers", uri, opts, cache)``.
Models arrive as object-store tree keys: :meth:`GeneratorWorker.load` materialises the tree
once per node in the node's model cache (``workers/model_cache.py``: written to a temp folder,
then renamed, so actors sharing a node and a cache never see a half-written model; kept within
``FLYWHEEL_MODEL_CACHE_GIB``), pins it while the actor serves it, and reloads the backend only
when the key or dtype changes.

Health: the backend reports every decoding step to the actor (:data:`Progress`), and
:meth:`GeneratorWorker.health` — in a concurrency group of its own, so it answers while a
generate call runs — says what the actor is doing and how long ago it last produced a token
(:meth:`GeneratorWorker.stats`, in the same group, what work it answered). The driver
(``workers/driver/health.py``) declares the actor hung when that answer is late or the tokens
stop, kills it and starts a fresh one. :meth:`GeneratorWorker.probe` is a real 1-token
generation, run on a (re)started actor before it gets shards. :meth:`inject_stall` is the
fault hook the tests use to make a real backend stop producing tokens.

Hybrid engine: on a run that declares no GPUs, with the transformers backend and one training
worker, the peer's first actor also builds the base model (:meth:`build_base`) and trains
its checkpoints (:meth:`train`), as verl's hybrid engine keeps rollout and training in one
worker: no other process pays the ~10 s of torch and transformers imports, and training
starts warm from the first round (``workers.driver.placement.trains_in_generator``).

Start-up: the flow creates a run's actors as the run starts (``start_generators``), before
their first model exists; each actor imports its backend's libraries (``WARM_IMPORTS``, ~5 s
of transformers or vLLM) on a thread of its own meanwhile, so that work overlaps the base
model's preparation instead of delaying the first generation. :meth:`load` waits for it:
the default group never imports beside it.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
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
from dataflywheel.store import normalize_key, open_store
from dataflywheel.torch_threads import torch_threads
from dataflywheel.training.tiny import TinyModelConfig
from workers.model_cache import Lease, ModelCache
from workers.trainer import TrainJob, TrainOutcome

# What each backend's first load imports (the model classes' shared base), imported on a thread
# when the actor starts. Failures are left to the real import in load(), which reports them.
WARM_IMPORTS: dict[str, tuple[str, ...]] = {
    "transformers": ("transformers.modeling_utils", "transformers.generation.utils"),
    "vllm": ("vllm",),
}


def _import_all(modules: Sequence[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # load() imports it again and raises what it says
            return


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
        # The budget is read here, on the actor's node (FLYWHEEL_MODEL_CACHE_GIB: the driver's
        # value when it sets one, else the node's own).
        self.cache = ModelCache.from_settings(self.cache_dir)
        self._pin: Lease | None = None  # on the cache entry being served
        self.backend: GenerationBackend = make_backend(backend, **(backend_options or {}))
        self._warming = threading.Thread(
            target=_import_all, args=(WARM_IMPORTS.get(backend, ()),), name="warm-imports"
        )
        self._warming.start()
        self.model_key: str | None = None
        self.dtype: str | None = None
        self.model_path: Path | None = None
        # What the default group is doing ("idle", "loading", "generating", "probing",
        # "training", "building"), since when, and the last time the backend produced a
        # token (monotonic seconds).
        self._state = "idle"
        self._state_at = self._progress_at = time.monotonic()
        self._steps = 0
        self._stall_after: int | None = None  # inject_stall: steps left before stalling
        self._calls = self._requests = 0  # generate calls answered, and their requests
        self._load_seconds = 0.0  # spent in loads since the last take_load_seconds
        # The GPU lease: since when (wall clock) the model holds device memory; None while
        # released (release()) or with nothing loaded. Wall clock, not monotonic: leases
        # of several processes are compared.
        self._awake_since: float | None = None

    def _enter(self, state: str) -> None:
        self._state, self._state_at = state, time.monotonic()
        self._progress_at = self._state_at
        if state != "idle" and self._awake_since is None:
            self._awake_since = time.time()  # loading or serving takes the device again

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
        self._warming.join()  # never import beside the warm-up thread (module locks)
        if (key, dtype) != (self.model_key, self.dtype):
            self._enter("loading")
            start = time.perf_counter()
            try:
                pin = self.cache.acquire(self.store, key)
                self.model_key = self.dtype = None  # stays unset if the load below fails
                try:
                    self.backend.load(pin.path, dtype)
                except BaseException:
                    pin.release()
                    self._unpin()  # the backend dropped the previous model too
                    raise
                self._unpin()  # the previous model, still read until the line above
                self._pin = pin
                self.model_key, self.dtype, self.model_path = key, dtype, pin.path
                self.cache.evict()  # the previous model may be the one over the budget
            finally:
                self._load_seconds += time.perf_counter() - start
                self._enter("idle")
        return self.node_id()

    def train(self, job: TrainJob, threads: int) -> TrainOutcome:
        """Hybrid engine (``workers.driver.placement.trains_in_generator``): train ``job``
        in this process on ``threads`` torch threads, as the one-worker training task would
        (``workers.trainer.train_here``, same inputs, same result), without a second process
        that imports torch, transformers and TRL again. The model being served stays
        loaded; training reads its own copy of the parent weights from the store."""
        from workers.trainer import train_here

        self._warming.join()
        self._enter("training")
        try:
            with torch_threads(threads):
                outcome = train_here(job)
        finally:
            self._enter("idle")
        assert outcome is not None  # rank 0 of 1
        return outcome

    def build_base(
        self,
        store_uri: str,
        store_options: dict[str, Any],
        tiny_cfg: TinyModelConfig,
        seed: int,
        threads: int,
    ) -> tuple[str, str]:
        """Hybrid engine: build and store the run's tiny base model here (what the
        ``workers.bootstrap.build_base_model`` task does); returns (tree key, digest)."""
        from workers.bootstrap import build_tiny_here

        self._warming.join()
        self._enter("building")
        try:
            with torch_threads(threads):
                return build_tiny_here(store_uri, store_options, tiny_cfg, seed)
        finally:
            self._enter("idle")

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

    def release(self) -> dict[str, Any] | None:
        """Give the device memory back before another stage (training) uses the GPU:
        the backend sleeps (vLLM sleep mode, weights to host; or its engine is shut down) and
        the next load or generate call wakes it. Returns the lease that ends here (node, GPU
        ids, wall-clock start and end), None when the model held no device memory."""
        if self._awake_since is None:
            return None
        self._enter("releasing")
        try:
            self.backend.sleep()
        finally:
            self._enter("idle")
        lease = self.lease(time.time())
        self._awake_since = None
        return lease

    def lease(self, until: float | None = None) -> dict[str, Any] | None:
        """The current GPU lease (node, GPU ids, start, and ``until`` or None while open)."""
        if self._awake_since is None:
            return None
        return {
            "node": self.node_id(),
            "gpus": [str(g) for g in ray.get_gpu_ids()],
            "start": self._awake_since,
            "end": until,
        }

    @ray.method(concurrency_group="health")
    def health(self) -> dict[str, Any]:
        """What the model thread is doing (``state``: idle, loading, generating, probing,
        training, building), for how long (``state_s``), seconds since its last token or
        state change (``quiet_s``), and decoding steps so far. Answers while a generate call
        runs."""
        now = time.monotonic()
        return {
            "state": self._state,
            "state_s": now - self._state_at,
            "quiet_s": now - self._progress_at,
            "steps": self._steps,
            "node_id": self.node_id(),
            "pid": os.getpid(),
            "gpus": [str(g) for g in ray.get_gpu_ids()],
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
        self.model_key = self.dtype = self.model_path = None
        self._awake_since = None
        self._unpin()

    def _unpin(self) -> None:
        if self._pin is not None:
            self._pin.release()
            self._pin = None
