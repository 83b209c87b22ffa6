"""Generation through any OpenAI-compatible ``/v1/completions`` endpoint (vLLM, SGLang, hosted).

Runs in: Ray worker (or any process: it holds no model, only an HTTP client).

Each request is its own HTTP call with its own ``seed`` (the API takes one seed per call, and
``n=1``), so a sample is as reproducible as the server makes seeded sampling; calls run
concurrently on a small thread pool. The server owns its weights: :meth:`OpenAIBackend.load`
only checks that the endpoint is up and serves ``model_name``. That is why it serves the
``llm_judge`` scorer (``workers/model_scorers.py``) and never a run's own generation: an
endpoint cannot load the checkpoints a run trains, so the run spec refuses
``generation.backend: openai``. Transient failures (connection errors, 429, 5xx) are retried
with backoff; anything else raises with the server's message, never an empty completion.
Only the fields of :class:`SamplingConfig` are sent: a vLLM server fills the rest (top_k,
repetition_penalty, ...) from the model's generation_config unless it was started with
``--generation-config vllm``, which is how to get the same samples as ``VLLMBackend``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from dataflywheel.generation import Completion, GenerationRequest, Progress, SamplingConfig

_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class EndpointError(RuntimeError):
    """The endpoint refused a request or answered something that is not a completion."""


class OpenAIBackend:
    """Completions from ``<base_url>/completions``; ``base_url`` ends in ``/v1`` (SDK style)."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model_name: str,
        api_key: str | None = None,
        *,
        concurrency: int = 8,
        timeout_s: float = 300.0,
        max_retries: int = 3,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self._concurrency = max(1, concurrency)
        self._max_retries = max(0, max_retries)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout_s)
        )

    def load(self, model_dir: Path, dtype: str) -> None:
        """Check that the endpoint serves ``model_name``; ``model_dir`` and ``dtype`` are the
        server's business (they are recorded by the caller, not sent)."""
        body = self._request("GET", "/models")
        served = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
        if self.model_name not in served:
            raise EndpointError(
                f"{self.base_url} does not serve model {self.model_name!r} (it serves "
                f"{served}); pass one of those as model_name"
            )

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        sampling: SamplingConfig,
        progress: Progress | None = None,
    ) -> list[Completion]:
        """One completion per request, in request order; ``progress`` hears of each finished
        request (the server streams nothing finer to us)."""
        if not requests:
            return []

        def complete(req: GenerationRequest) -> Completion:
            done = self._complete(req, sampling)
            if progress is not None:
                progress(1)
            return done

        with ThreadPoolExecutor(min(self._concurrency, len(requests))) as pool:
            return list(pool.map(complete, requests))

    def close(self) -> None:
        self._client.close()

    def _complete(self, req: GenerationRequest, sampling: SamplingConfig) -> Completion:
        payload: dict[str, Any] = {
            "model": self.model_name,
            "prompt": req.prompt,
            "n": 1,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": req.seed,
        }
        if sampling.stop:
            payload["stop"] = list(sampling.stop)
        body = self._request("POST", "/completions", payload)
        try:
            choice = body["choices"][0]
            usage = body["usage"]
            text, reason = choice["text"], choice["finish_reason"]
            prompt_tokens, completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
        except (KeyError, IndexError, TypeError) as exc:
            raise EndpointError(f"malformed completion from {self.base_url}: {body!r}") from exc
        if reason not in ("stop", "length"):
            raise EndpointError(
                f"prompt {req.prompt_id} sample {req.sample_index}: finish_reason={reason!r} "
                "(expected 'stop' or 'length')"
            )
        return Completion(
            prompt_id=req.prompt_id,
            sample_index=req.sample_index,
            seed=req.seed,
            text=text,
            prompt_tokens=int(prompt_tokens),
            completion_tokens=int(completion_tokens),
            finish_reason=reason,
        )

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        for attempt in range(self._max_retries + 1):
            last = attempt == self._max_retries
            try:
                resp = self._client.request(method, path, json=payload)
            except httpx.TransportError as exc:
                if last:
                    raise EndpointError(f"{method} {self.base_url}{path}: {exc}") from exc
            else:
                if resp.status_code < 400:
                    return resp.json()
                if last or resp.status_code not in _RETRY_STATUS:
                    raise EndpointError(
                        f"{method} {self.base_url}{path} -> {resp.status_code}: {resp.text[:500]}"
                    )
            time.sleep(min(2.0**attempt, 10.0))
        raise AssertionError("unreachable")
