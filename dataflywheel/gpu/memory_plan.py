"""The GPU memory plan of a run spec: what each generator engine and each trainer needs on
one GPU, against what the spec gives it, decided before anything starts.

Runs in: anywhere (pure; :func:`plan_for_spec` also reads a local model's ``config.json``).
The figures are estimates meant to catch a spec that cannot fit (full fine-tuning of a 7B
model on one 80 GiB GPU) before a run reserves GPUs and fails minutes later; they are not a
promise that a spec that passes fits to the last MiB. docs/architecture.md ("The memory
plan") gives every formula and its source. Only workers that reserve GPUs are checked, and
a model whose config is unknown (a ``store:``/``s3://`` URI) is not checked at all.
``generation_memory`` and ``training_memory`` estimate one worker each; this module decides
the sequence lengths, gathers their plans and gives the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dataflywheel.gpu.generation_memory import generation_plan
from dataflywheel.gpu.model_config import read_model_config
from dataflywheel.gpu.shape import ModelShape, shape_from_config, unknown_lora_targets
from dataflywheel.gpu.training_memory import training_plan
from dataflywheel.gpu.worker_plan import WorkerPlan, format_count
from dataflywheel.spec import RunSpec

DEFAULT_PROMPT_TOKENS = 512


@dataclass(frozen=True)
class MemoryPlan:
    """The plan of a spec: the model's size, one :class:`WorkerPlan` per GPU worker kind."""

    model: str
    parameters: int | None
    workers: tuple[WorkerPlan, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def refusals(self) -> tuple[str, ...]:
        return tuple(line for worker in self.workers for line in worker.refusals)

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    @property
    def verdict(self) -> Literal["fits", "refused", "unchecked"]:
        if self.refused:
            return "refused"
        return "fits" if self.workers else "unchecked"

    @property
    def message(self) -> str:
        """Every refusal, one per line ('' when the plan fits)."""
        return "\n".join(self.refusals)

    def worker(self, kind: str) -> WorkerPlan:
        return next(w for w in self.workers if w.kind == kind)


def _context(spec: RunSpec, shape: ModelShape, prompt_tokens: int) -> int:
    """The engine's context: generation.engine.max_model_len, at most the model's own."""
    own = shape.max_position_embeddings
    limit = spec.generation.engine.max_model_len
    if limit is not None:
        return min(limit, own) if own else limit
    return own or prompt_tokens + spec.generation.max_tokens


def _unknown_reason(spec: RunSpec) -> str:
    if spec.model.kind == "uri":
        return (
            "model.source is a store:/s3:// URI, whose config is read only when the run fetches it"
        )
    return f"model.source {spec.model.source} has no readable config.json"


def plan_memory(
    spec: RunSpec, config: dict[str, Any] | None, prompt_tokens: int = DEFAULT_PROMPT_TOKENS
) -> MemoryPlan:
    """The memory plan of ``spec`` for the model described by ``config`` (its Hugging Face
    config dict; None: unknown). ``prompt_tokens`` is the prompt length assumed for the
    sequences trained on."""
    if prompt_tokens < 1:
        raise ValueError(f"prompt_tokens: must be ≥ 1 (got {prompt_tokens})")
    res = spec.resources
    shape, unknown = None, _unknown_reason(spec)
    if config is not None:
        try:
            shape = shape_from_config(config)
        except ValueError as exc:
            unknown = str(exc)
    if shape is None:
        model, params = "unknown size", None
    else:
        params = shape.parameters
        model = f"{format_count(params)} parameters, {shape.num_layers} layers"
    checks = {
        "generation": res.generator_gpus > 0,
        "training": res.train_gpus_per_worker > 0,
    }
    if not any(checks.values()):
        return MemoryPlan(
            model,
            params,
            notes=(
                "no GPU is reserved (resources.generator_gpus and "
                "resources.train_gpus_per_worker are 0): nothing to check",
            ),
        )
    if shape is None:
        return MemoryPlan(model, params, notes=(f"{unknown}: nothing checked",))
    context = _context(spec, shape, prompt_tokens)
    wanted = prompt_tokens + spec.generation.max_tokens
    seq_len = min(wanted, context)
    capped = f", capped at the {context}-token context" if seq_len < wanted else ""
    notes = [
        f"sequences: {prompt_tokens} prompt tokens (assumed; flywheel plan --prompt-tokens) + "
        f"generation.max_tokens {spec.generation.max_tokens} = {wanted} tokens{capped}"
    ]
    workers = []
    if checks["generation"]:
        workers.append(generation_plan(spec, shape, context, seq_len))
    if checks["training"]:
        workers.append(training_plan(spec, shape, seq_len))
        lora = spec.training.lora
        stray = unknown_lora_targets(lora.target_modules) if lora else []
        if spec.training.mode == "lora" and stray:
            notes.append(f"training.lora.target_modules {stray}: not counted (not Llama linears)")
    return MemoryPlan(model, params, tuple(workers), tuple(notes))


def plan_for_spec(spec: RunSpec, prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> MemoryPlan:
    """:func:`plan_memory` with the model's config found from ``spec.model`` (a local
    folder's config.json is read): what ``flywheel plan``, ``flywheel run`` and
    ``POST /runs`` call."""
    return plan_memory(spec, read_model_config(spec.model), prompt_tokens)
