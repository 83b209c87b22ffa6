"""The ``reward_model`` scorer: a sequence-classification model's scalar reward per sample.

Runs in: a Ray worker (``workers/verify.py`` → ``workers/model_scorers.py``). Unlike the pure
verifiers it holds a model, so it is a *batch* scorer: :meth:`RewardModelVerifier.score_batch`
scores many (prompt, completion) texts per forward pass, and the model is loaded once per
verifier object. torch and transformers are imported only when the model is loaded.

The model is a Hugging Face folder whose head has one label (``AutoModelForSequenceClassification``,
``num_labels=1``; ``training/reward.py`` builds a tiny one): a local folder, or a
``store:sha256/...`` tree key that the worker fetches first. The input is
``template`` with ``{prompt}`` and ``{completion}`` replaced, truncated to ``max_length``
tokens; ``value`` is the raw logit and the sample passes when it reaches ``threshold``.

``version`` hashes this module, the configuration and, for a local folder, the digest of
its files, so a retrained model in the same folder is a new version (store keys are content
addresses already).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from dataflywheel.prompts import Prompt, canonical_json, sha256_hex
from dataflywheel.verifiers import Score, ScorerResources, verifier_version

URI_PREFIXES = ("store:",)


def _resolve_local(value: str, info: ValidationInfo | None) -> str:
    """Absolute path of a local folder (relative to the spec's folder); it must exist. Used
    by field validators, so pydantic puts the field's location before the message."""
    base = Path(((info.context if info else None) or {}).get("base_dir") or Path.cwd())
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    if not path.is_dir():
        raise ValueError(
            f"model folder {str(path)!r} does not exist; give a folder saved "
            "with save_pretrained, or a store:sha256/... key (flywheel store put)"
        )
    return str(path)


class RewardModelConfig(ScorerResources):
    """Configuration of ``reward_model``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["reward_model"] = Field(default="reward_model", description="Verifier name.")
    model: str = Field(
        description="A sequence-classification model (one label): a local folder (relative to "
        "the spec's folder) or a store:sha256/... tree key."
    )
    threshold: float = Field(0.0, description="A sample passes when its reward is ≥ this.")
    template: str = Field(
        "{prompt}{completion}",
        min_length=1,
        description="The text the model reads; {prompt} and {completion} are replaced.",
    )
    max_length: int = Field(512, ge=8, description="Longest input in tokens (truncated left).")
    batch_size: int = Field(16, ge=1, le=1024, description="Texts per forward pass.")

    @field_validator("model")
    @classmethod
    def _exists(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith(URI_PREFIXES):
            return value
        return _resolve_local(value, info)


def render(template: str, prompt: str, completion: str) -> str:
    """``template`` with ``{prompt}`` and ``{completion}`` replaced (no other braces are
    interpreted, so code with ``{}`` is safe)."""
    return template.replace("{prompt}", prompt).replace("{completion}", completion)


def folder_digest(path: Path) -> str:
    """sha256 over the sorted (relative path, file sha256) pairs of a folder."""
    entries = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        entries.append([file.relative_to(path).as_posix(), digest.hexdigest()])
    return sha256_hex(canonical_json(entries))


@dataclass
class RewardModelVerifier:
    """Scores (prompt, completion) pairs with a reward model, in batches."""

    config: RewardModelConfig
    model_dir: Path | None = None  # set by the worker after fetching a store URI
    name: ClassVar[str] = "reward_model"
    scope: ClassVar[Literal["batch"]] = "batch"
    _loaded: Any = field(default=None, init=False, repr=False)

    def _folder(self) -> Path:
        if self.model_dir is not None:
            return Path(self.model_dir)
        if self.config.model.startswith(URI_PREFIXES):
            raise RuntimeError(
                f"reward_model.model {self.config.model!r} is a store key: the worker must "
                "fetch it and pass model_dir (workers/model_scorers.py)"
            )
        path = Path(self.config.model)
        if not path.is_dir():
            raise FileNotFoundError(
                f"reward_model.model: model folder {str(path)!r} does not exist (any more); "
                "fix verification.verifiers[].model"
            )
        return path

    @cached_property
    def version(self) -> str:
        extra = (
            [] if self.config.model.startswith(URI_PREFIXES) else [folder_digest(self._folder())]
        )
        return sha256_hex(
            canonical_json([verifier_version(self.config, sys.modules[__name__]), extra])
        )

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            folder = self._folder()
            try:
                tokenizer = AutoTokenizer.from_pretrained(folder)
                model = AutoModelForSequenceClassification.from_pretrained(
                    folder, dtype=torch.float32
                )
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"reward_model.model: {folder} is not a sequence-classification model "
                    f"folder ({exc})"
                ) from None
            if model.config.num_labels != 1:
                raise ValueError(
                    f"reward_model.model: {folder} has {model.config.num_labels} labels; a "
                    "reward model has one (num_labels=1)"
                )
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.truncation_side = "left"  # keep the completion's end
            # The GPU when the scoring task was granted one (Ray sets CUDA_VISIBLE_DEVICES).
            model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
            self._loaded = (tokenizer, model)
        return self._loaded

    def rewards(self, texts: Sequence[str]) -> list[float]:
        """The reward of each text, ``batch_size`` texts per forward pass."""
        import torch

        tokenizer, model = self._load()
        out: list[float] = []
        for start in range(0, len(texts), self.config.batch_size):
            batch = list(texts[start : start + self.config.batch_size])
            encoded = tokenizer(
                batch,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.config.max_length,
            )
            with torch.inference_mode():
                logits = model(**encoded.to(model.device)).logits
            out.extend(float(v) for v in logits[:, 0].tolist())
        return out

    def score_batch(self, completions: Sequence[str], prompts: Sequence[Prompt]) -> list[Score]:
        texts = [
            render(self.config.template, p.text, c)
            for c, p in zip(completions, prompts, strict=True)
        ]
        scores = []
        for reward in self.rewards(texts):
            passed = reward >= self.config.threshold
            scores.append(
                Score.scored(
                    passed, "reward_pass" if passed else "reward_fail", reward, reward=reward
                )
            )
        return scores


def build(config: RewardModelConfig | Mapping[str, Any]) -> RewardModelVerifier:
    return RewardModelVerifier(RewardModelConfig.model_validate(config))
