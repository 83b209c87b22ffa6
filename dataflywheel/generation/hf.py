"""The transformers generation backend: batched ``model.generate`` on CPU (or one GPU).

Runs in: Ray worker (``workers/generator.py``) and tests. Imports torch and transformers at
module level, so only the lazy factory in ``generation/__init__.py`` may import it.

The model runs on the GPU when the process sees one (a Ray actor created with
``num_gpus=1``), else on the CPU. Batches are the requests in the order given, cut every
``batch_size``; prompts are left padded and tokenized like vLLM does
(``add_special_tokens=True``). Sampling parameters come only from :class:`SamplingConfig`:
the folder's ``generation_config.json`` sampling defaults (top_k, repetition penalty, ...)
are overridden, so the same config means the same sampler for every model. A completion
ends at eos, at the first stop string (matched on the decoded completion only, never across
the prompt boundary, and trimmed with what follows it), or at ``max_tokens``. Unlike vLLM,
nothing caps prompt + ``max_tokens`` at the model's ``max_position_embeddings``.

Determinism contract: the same requests in the same order, the same ``batch_size``, the same
model folder and dtype, on the same CPU build of torch, give the same completions. Sampling
draws from torch's global RNG inside :func:`torch.random.fork_rng`, seeded per batch from
every (sample_index, seed) of the batch, so the caller's RNG is untouched and a
batch's samples do not depend on what ran before it. Samples depend on the batch they ran
in, not on their own seed alone: regrouping the same requests can change them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.utils import logging as hf_logging

from dataflywheel.generation import (
    DTYPES,
    Completion,
    GenerationRequest,
    Progress,
    SamplingConfig,
)
from dataflywheel.torch_threads import torch_threads

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _empty_device_cache() -> None:
    """Return the caching allocator's free blocks to the GPU, so another process (the
    trainer) can use them."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def batch_seed(requests: Sequence[GenerationRequest]) -> int:
    """The RNG seed of one batch: a hash of its requests' sample indices and seeds (each
    derived from the run seed and its prompt's content; never from a database row id, which
    depends on which task inserted the prompt first)."""
    text = ";".join(f"{r.sample_index},{r.seed}" for r in requests)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


class _StopOnStrings(StoppingCriteria):
    """Ends a row once its decoded completion contains a stop string. HF's own
    StopStringCriteria also matches across the prompt boundary; vLLM does not, nor do we."""

    def __init__(self, tokenizer, prompt_len: int, stop: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.stop = stop

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_len :], skip_special_tokens=True
        )
        done = [any(s in t for s in self.stop) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _Heartbeat(StoppingCriteria):
    """Never stops a row: reports each decoding step to the caller's :data:`Progress`
    (``generate`` calls its stopping criteria once per new token of the batch)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        self.progress(1)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class TransformersBackend:
    """Samples with ``model.generate``; ``batch_size`` rows per call."""

    name = "transformers"

    def __init__(self, batch_size: int = 32, num_threads: int | None = None) -> None:
        """``num_threads``: torch threads while generating (None: the process's setting)."""
        if batch_size < 1:
            raise ValueError(f"batch_size: must be ≥ 1 (got {batch_size})")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads: must be ≥ 1 (got {num_threads})")
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.model = None
        self.tokenizer = None
        self.dtype: str | None = None
        self.model_dir: Path | None = None
        self.asleep = False  # weights moved off the GPU by sleep()

    def load(self, model_dir: Path, dtype: str) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype: one of {', '.join(DTYPES)} (got {dtype!r})")
        hf_logging.disable_progress_bar()
        self.close()
        # A fresh model from the saved folder: a model object that went through TRL keeps an
        # autocast wrapper that made generation ~2x slower in our measurements. bf16 is
        # a cast of the fp32 weights (this CPU has AMX; ~2x faster than fp32).
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=TORCH_DTYPES[dtype])
        # The GPU when the actor was granted one (Ray sets CUDA_VISIBLE_DEVICES), else CPU.
        model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer = model, tokenizer
        self.dtype, self.model_dir = dtype, Path(model_dir)

    def close(self) -> None:
        self.model = self.tokenizer = self.dtype = self.model_dir = None
        self.asleep = False
        _empty_device_cache()

    def sleep(self) -> None:
        """Move the weights to host memory and return the GPU's cached blocks (a no-op on
        CPU, where there is no device memory to give back)."""
        if self.model is None or self.asleep or not torch.cuda.is_available():
            return
        self.model.to("cpu")
        self.asleep = True
        _empty_device_cache()

    def wake(self) -> None:
        if self.model is not None and self.asleep:
            self.model.to("cuda")
        self.asleep = False

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        sampling: SamplingConfig,
        progress: Progress | None = None,
    ) -> list[Completion]:
        if self.model is None:
            raise RuntimeError("no model loaded: call load(model_dir, dtype) first")
        self.wake()
        if sampling.dtype != self.dtype:
            raise ValueError(
                f"sampling.dtype is {sampling.dtype!r} but the model is loaded in "
                f"{self.dtype!r}; load it again in {sampling.dtype!r}"
            )
        out: list[Completion] = []
        with torch_threads(self.num_threads):
            for start in range(0, len(requests), self.batch_size):
                batch = requests[start : start + self.batch_size]
                out.extend(self._batch(batch, sampling, progress))
        return out

    # --- one batch --------------------------------------------------------------------

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _batch(
        self,
        requests: Sequence[GenerationRequest],
        sampling: SamplingConfig,
        progress: Progress | None = None,
    ) -> list[Completion]:
        tok, model = self.tokenizer, self.model
        enc = tok(
            [r.prompt for r in requests],
            padding=True,
            padding_side="left",
            return_tensors="pt",
        ).to(model.device)
        prompt_len = enc["input_ids"].shape[1]
        eos_ids = self._eos_ids()
        greedy = sampling.temperature == 0
        config = GenerationConfig(
            max_new_tokens=sampling.max_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None if greedy else 0,  # 0: no top-k cut when sampling, as in vLLM
            repetition_penalty=1.0,
            eos_token_id=sorted(eos_ids),
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
        )
        stopping = StoppingCriteriaList(
            [_StopOnStrings(tok, prompt_len, sampling.stop)] if sampling.stop else []
        )
        if progress is not None:
            stopping.append(_Heartbeat(progress))
        devices = [model.device] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(batch_seed(requests))
            output = model.generate(**enc, generation_config=config, stopping_criteria=stopping)
        rows = output[:, prompt_len:].tolist()
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        return [
            self._completion(r, ids, int(n), eos_ids, sampling.stop)
            for r, ids, n in zip(requests, rows, prompt_tokens, strict=True)
        ]

    def _completion(
        self,
        request: GenerationRequest,
        ids: list[int],
        prompt_tokens: int,
        eos_ids: set[int],
        stop: tuple[str, ...],
    ) -> Completion:
        # After a row finishes, generate() fills it with pad tokens: cut at the first eos.
        cut, reason = len(ids), "length"
        for i, token in enumerate(ids):
            if token in eos_ids:
                cut, reason = i + 1, "stop"
                break
        text = self.tokenizer.decode(ids[:cut], skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in stop) if i >= 0]
        if hits:
            text, reason = text[: min(hits)], "stop"
            # Count tokens up to the one that completed the stop string.
            for k in range(1, cut + 1):
                decoded = self.tokenizer.decode(ids[:k], skip_special_tokens=True)
                if any(s in decoded for s in stop):
                    cut = k
                    break
        return Completion(
            prompt_id=request.prompt_id,
            sample_index=request.sample_index,
            seed=request.seed,
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=cut,
            finish_reason=reason,
        )
