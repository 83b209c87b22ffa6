"""Generation backends and the types they share: requests in, completions out.

Runs in: anywhere (pure) for the types; backends run in Ray workers (``workers/generator.py``).

A backend turns :class:`GenerationRequest` rows (the exact prompt text, already templated)
into :class:`Completion` rows under one :class:`SamplingConfig`. Backends are named in the
explicit :data:`BACKENDS` registry; each factory imports its backend module only when called,
so importing this package never imports torch, transformers or vllm (the flow process relies
on that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

FinishReason = Literal["stop", "length"]
DTYPES: tuple[str, ...] = ("float32", "bfloat16")

Progress = Callable[[int], None]
"""A heartbeat a backend calls from its generating thread with the decoding steps (or, for
an HTTP endpoint, the finished requests) since its last call. The generator actor's health
probe reads it: a backend that stops calling it has stopped producing tokens."""


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample. ``temperature == 0`` is greedy; ``stop`` strings end a completion and
    are trimmed from its text; ``dtype`` is the weights' dtype the samples must come from."""

    temperature: float
    top_p: float
    max_tokens: int
    dtype: str = "float32"
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature: must be ≥ 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1] (got {self.top_p})")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be ≥ 1 (got {self.max_tokens})")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: one of {', '.join(DTYPES)} (got {self.dtype!r})")
        if any(not s for s in self.stop):
            raise ValueError("stop: stop strings must be non-empty")


@dataclass(frozen=True)
class GenerationRequest:
    """One sample to draw: ``prompt`` is the exact text fed to the model."""

    prompt_id: int
    sample_index: int
    seed: int
    prompt: str


@dataclass(frozen=True)
class Completion:
    """One drawn sample. ``completion_tokens`` counts generated tokens up to and including
    the one that ended it (eos or the last token of a stop string); ``finish_reason`` is
    ``"stop"`` (eos or stop string) or ``"length"`` (``max_tokens`` reached)."""

    prompt_id: int
    sample_index: int
    seed: int
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class GenerationBackend(Protocol):
    """A loaded model that samples completions. One instance holds one model at a time."""

    name: str

    def load(self, model_dir: Path, dtype: str) -> None:
        """Load (or replace) the model from a Hugging Face folder, in ``dtype``."""
        ...

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        sampling: SamplingConfig,
        progress: Progress | None = None,
    ) -> list[Completion]:
        """One completion per request, in request order; ``progress`` is called as tokens
        are produced (at least once per decoding step or finished request)."""
        ...

    def close(self) -> None:
        """Free the model (and any engine process)."""
        ...

    def sleep(self) -> None:
        """Give back the device memory the model holds while keeping what :meth:`wake`
        needs to serve it again (before another stage trains on the same GPU)."""
        ...

    def wake(self) -> None:
        """Serve the model slept by :meth:`sleep` again (a no-op when awake)."""
        ...


def _transformers(**options: Any) -> GenerationBackend:
    from dataflywheel.generation.hf import TransformersBackend

    return TransformersBackend(**options)


def _vllm(**options: Any) -> GenerationBackend:
    from dataflywheel.generation.vllm_backend import VLLMBackend

    return VLLMBackend(**options)


def _openai(**options: Any) -> GenerationBackend:
    from dataflywheel.generation.openai_backend import OpenAIBackend

    if "base_url" not in options or "model_name" not in options:
        raise ValueError("the openai backend needs base_url and model_name options")
    return OpenAIBackend(**options)


# Explicit registry: name -> factory. A factory imports its module lazily (see the module
# docstring), takes the backend's keyword options (e.g. batch_size) and works with none
# (openai excepted: it needs the endpoint, and serves judges only; see openai_backend.py).
BACKENDS: dict[str, Callable[..., GenerationBackend]] = {
    "transformers": _transformers,
    "vllm": _vllm,
    "openai": _openai,
}


def make_backend(name: str, **options: Any) -> GenerationBackend:
    """A new, unloaded backend by registry name, built with its keyword ``options``."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown generation backend {name!r}; registered: {', '.join(sorted(BACKENDS))}"
        ) from None
    return factory(**options)
