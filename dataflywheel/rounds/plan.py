"""What a round works on, decided from the spec alone: prompts, seeds, sampling, training.

Runs in: anywhere (pure). Every choice here is a deterministic function of the run spec and
the round index (plus the curriculum band the previous round earned), so a resumed or
replayed round recomputes exactly the same prompts, seeds and configurations. Seeds are keyed
by prompt *content hash*, never by database id, so a replay into another database reproduces
every sample seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from dataflywheel.generation import GenerationRequest, SamplingConfig
from dataflywheel.generation.prompt_format import PromptFormat
from dataflywheel.prompts import Prompt, arithmetic, humaneval
from dataflywheel.prompts.arithmetic import Split
from dataflywheel.prompts.jsonl import load_jsonl
from dataflywheel.spec import (
    BuiltinPromptsSpec,
    HumanEvalPromptsSpec,
    JsonlPromptsSpec,
    RunSpec,
    derive_seed,
)
from dataflywheel.training import TrainConfig

Band = tuple[int, int]

WARMUP_INDEX = 0
"""Round index of the labelled warm-up (self-improvement rounds are 1..N)."""

TRAIN_DATASET = "train"
"""Name of the dataset a round selects and trains on (``datasets.name``)."""

EVAL_SET = "heldout"
"""Name of the held-out evaluation (``evaluations.eval_set``) that gates and steers rounds."""


@dataclass(frozen=True)
class PromptRef:
    """A prompt as the flow sees it after insertion: its row id and its content."""

    id: int
    prompt: Prompt


def first_round(spec: RunSpec) -> int:
    return WARMUP_INDEX if spec.warmup is not None else 1


def round_indices(spec: RunSpec) -> list[int]:
    """All round indices of a run, warm-up first."""
    return list(range(first_round(spec), spec.rounds + 1))


def initial_band(spec: RunSpec) -> Band:
    source = spec.prompts
    low = source.min_difficulty if source.min_difficulty is not None else 0
    high = source.max_difficulty if source.max_difficulty is not None else low
    return (low, high)


def next_band(spec: RunSpec, band: Band, primary_value: float | None) -> Band:
    """The band the next round samples from (curriculum hook; unchanged without one)."""
    if spec.curriculum is None or primary_value is None:
        return band
    return spec.curriculum.next_band(band, primary_value)


def _jsonl_rows(source: JsonlPromptsSpec | str, split: str) -> list[Prompt]:
    path = source.path if isinstance(source, JsonlPromptsSpec) else source
    prompt_set = source.prompt_set if isinstance(source, JsonlPromptsSpec) else None
    rows = load_jsonl(Path(path), prompt_set=prompt_set, split=split)
    return sorted(rows, key=lambda p: p.content_hash)


def _in_band(prompts: list[Prompt], low: int | None, high: int | None) -> list[Prompt]:
    return [
        p
        for p in prompts
        if (low is None or (p.difficulty or 0) >= low)
        and (high is None or (p.difficulty or 0) <= high)
    ]


def _draw(prompts: list[Prompt], n: int | None, seed: int) -> list[Prompt]:
    if n is None or n >= len(prompts):
        return prompts
    return random.Random(seed).sample(prompts, n)


def _builtin(
    source: BuiltinPromptsSpec,
    split: Split,
    n: int,
    seed: int,
    low: int,
    high: int,
    views: bool = False,
    pad_to: int | None = None,
) -> list[Prompt]:
    """Problems of levels ``low``-``high``, padded as a band whose top is ``pad_to`` (default
    ``high``) would be."""
    return arithmetic.generate(
        source.family,
        split=split,
        n=n,
        seed=seed,
        min_difficulty=low,
        max_difficulty=high,
        reversed_digits=source.reversed_digits,
        fixed_width=width_of(source, pad_to if pad_to is not None else high),
        commuted_views=views,
    )


def width_of(source: BuiltinPromptsSpec, top: int) -> int | None:
    """The zero-padded operand width of problems drawn from a band whose top level is
    ``top``: ``prompts.fixed_width``, the band's top with ``fixed_width: band`` (each held-out
    level is drawn as a band of its own, so it is padded to itself), None unpadded."""
    return top if source.fixed_width == "band" else source.fixed_width


def frontier_split(spec: RunSpec, band: Band) -> tuple[int, int] | None:
    """(prompts at the band's top level, prompts over its lower levels) when the curriculum
    draws a round at the frontier (``curriculum.lower_share``); None: spread over the band."""
    curriculum, n = spec.curriculum, spec.prompts.num_prompts
    if curriculum is None or curriculum.lower_share is None or band[0] >= band[1] or n is None:
        return None
    lower = round(n * curriculum.lower_share)
    return n - lower, lower


def _frontier_prompts(spec: RunSpec, round_index: int, band: Band) -> list[Prompt]:
    """A round's training prompts drawn at the frontier: ``1 - lower_share`` of them at the
    band's top level (the level the curriculum just reached), the rest spread over the levels
    below it, each part with a seed of its own; padded as the whole band would be."""
    source, (low, high) = spec.prompts, band
    split = frontier_split(spec, band)
    assert split is not None and not isinstance(source, HumanEvalPromptsSpec)
    top, lower = split
    seeds = [derive_seed(spec.seed, "prompts", round_index, part) for part in ("top", "lower")]
    if isinstance(source, BuiltinPromptsSpec):
        views = source.commuted_views
        out = _builtin(source, "train", top, seeds[0], high, high, views) if top else []
        if lower:
            out += _builtin(source, "train", lower, seeds[1], low, high - 1, views, pad_to=high)
    else:
        rows = _in_band(_jsonl_rows(source, source.split), low, high)
        out = _draw([p for p in rows if (p.difficulty or 0) == high], top, seeds[0])
        out += _draw([p for p in rows if (p.difficulty or 0) < high], lower, seeds[1])
    random.Random(derive_seed(spec.seed, "prompts", round_index, "order")).shuffle(out)
    return out


def train_prompts(spec: RunSpec, round_index: int, band: Band) -> list[Prompt]:
    """The round's training prompts: fresh problems drawn from the band with a round seed
    (at its frontier with ``curriculum.lower_share``: :func:`_frontier_prompts`)."""
    seed = derive_seed(spec.seed, "prompts", round_index)
    source = spec.prompts
    if frontier_split(spec, band) is not None:
        return _frontier_prompts(spec, round_index, band)
    if isinstance(source, BuiltinPromptsSpec):
        # Only the rounds' unlabelled problems get views: they exist for the vote.
        views = source.commuted_views
        return _builtin(source, "train", source.num_prompts, seed, band[0], band[1], views)
    if isinstance(source, HumanEvalPromptsSpec):
        return _draw(humaneval.split_problems(source.eval_problems)[0], source.num_prompts, seed)
    rows = _in_band(_jsonl_rows(source, source.split), band[0], band[1])
    return _draw(rows, source.num_prompts, seed)


def warmup_prompts(spec: RunSpec) -> list[Prompt]:
    """Labelled prompts of the warm-up stage (their references become the targets)."""
    warmup = spec.warmup
    assert warmup is not None
    low = warmup.min_difficulty if warmup.min_difficulty is not None else initial_band(spec)[0]
    high = warmup.max_difficulty if warmup.max_difficulty is not None else initial_band(spec)[1]
    seed = derive_seed(spec.seed, "warmup-prompts")
    source = spec.prompts
    if isinstance(source, BuiltinPromptsSpec):
        return _builtin(source, "train", warmup.num_prompts, seed, low, high)
    if isinstance(source, HumanEvalPromptsSpec):
        train = humaneval.split_problems(source.eval_problems)[0]
        return _draw(train, warmup.num_prompts, seed)
    rows = _in_band(_jsonl_rows(source, source.split), low, high)
    return _draw(rows, warmup.num_prompts, seed)


def per_level_eval(spec: RunSpec) -> bool:
    """Whether the run measures every difficulty level on its own held-out prompts (a
    curriculum with ``gate: top_level``)."""
    return spec.curriculum is not None and spec.curriculum.gate == "top_level"


def _shares(n: int, levels: int) -> list[int]:
    return [n // levels + (1 if i < n % levels else 0) for i in range(levels)]


def _eval_per_level(spec: RunSpec) -> list[Prompt]:
    """The held-out set of a per-level curriculum gate: ``evaluation.num_prompts`` spread
    evenly over every level from the first band's bottom (or ``evaluation.min_difficulty``)
    to ``curriculum.max_level`` (or ``evaluation.max_difficulty``), each level drawn on its
    own with its own seed, so the gate can read a level the model has not trained on yet.
    A level with fewer held-out problems than its share gives all it has."""
    evaluation, source, curriculum = spec.evaluation, spec.prompts, spec.curriculum
    assert curriculum is not None
    low = evaluation.min_difficulty
    low = low if low is not None else initial_band(spec)[0]
    high = evaluation.max_difficulty
    high = high if high is not None else curriculum.max_level
    levels = list(range(low, high + 1))
    out: list[Prompt] = []
    if isinstance(source, BuiltinPromptsSpec):
        shares = _shares(evaluation.num_prompts or 200, len(levels))
        for level, share in zip(levels, shares, strict=True):
            room = arithmetic.level_capacity(source.family, level, "eval", width_of(source, level))
            count = min(share, room)
            if count:
                seed = derive_seed(spec.seed, "eval-prompts", level)
                out += _builtin(source, "eval", count, seed, level, level)
        return out
    assert not isinstance(source, HumanEvalPromptsSpec)  # the spec refuses a curriculum there
    rows = _jsonl_rows(evaluation.path or source, evaluation.split)
    n = evaluation.num_prompts
    shares = _shares(n, len(levels)) if n is not None else [None] * len(levels)
    for level, share in zip(levels, shares, strict=True):
        seed = derive_seed(spec.seed, "eval-prompts", level)
        out += _draw(_in_band(rows, level, level), share, seed)
    return out


def eval_prompts(spec: RunSpec) -> list[Prompt]:
    """The held-out set, fixed for the whole run so rounds are comparable (per level with a
    ``top_level`` curriculum gate: :func:`_eval_per_level`)."""
    if per_level_eval(spec):
        return _eval_per_level(spec)
    evaluation, source = spec.evaluation, spec.prompts
    low = evaluation.min_difficulty
    high = evaluation.max_difficulty
    seed = derive_seed(spec.seed, "eval-prompts")
    if evaluation.path is not None:
        rows = _in_band(_jsonl_rows(evaluation.path, evaluation.split), low, high)
        return _draw(rows, evaluation.num_prompts, seed)
    if isinstance(source, BuiltinPromptsSpec):
        band = initial_band(spec)
        return _builtin(
            source,
            "eval",
            evaluation.num_prompts or 200,
            seed,
            low if low is not None else band[0],
            high if high is not None else band[1],
        )
    if isinstance(source, HumanEvalPromptsSpec):
        return _draw(
            humaneval.split_problems(source.eval_problems)[1], evaluation.num_prompts, seed
        )
    rows = _in_band(_jsonl_rows(source, evaluation.split), low, high)
    return _draw(rows, evaluation.num_prompts, seed)


def sampling(spec: RunSpec, purpose: str) -> SamplingConfig:
    gen = spec.generation
    if purpose == "train":
        temperature, n = gen.temperature, gen.samples_per_prompt
    else:
        ev = spec.evaluation
        temperature = ev.temperature if ev.temperature is not None else gen.temperature
        n = spec.eval_samples_per_prompt
    del n  # the number of samples is expressed by the requests, not the sampling config
    return SamplingConfig(
        temperature=temperature, top_p=gen.top_p, max_tokens=gen.max_tokens, dtype=gen.dtype
    )


def prompt_format(spec: RunSpec, use: str) -> PromptFormat:
    """How prompts are rendered for ``use``: "generate" (train and eval sampling alike) or
    "train" (SFT/DPO rows, which carry the exemplars only with few_shot.in_training)."""
    if use not in ("generate", "train"):
        raise ValueError(f"use: 'generate' or 'train' (got {use!r})")
    gen, few = spec.generation, spec.generation.few_shot
    with_shots = few is not None and (use == "generate" or few.in_training)
    return PromptFormat(
        chat_template=gen.chat_template,
        shots=tuple((e.prompt, e.completion) for e in few.examples) if with_shots else (),
        separator=few.separator if few is not None else "\n\n",
    )


def samples_per_prompt(spec: RunSpec, purpose: str) -> int:
    return (
        spec.generation.samples_per_prompt if purpose == "train" else spec.eval_samples_per_prompt
    )


def requests(
    spec: RunSpec, round_index: int, purpose: str, prompts: list[PromptRef], peer: int = 0
) -> list[GenerationRequest]:
    """One request per (prompt, sample index), each with its own derived seed. Peer ``p``'s
    samples take indices ``[p·n, (p+1)·n)``, so every peer's samples are rows of the round."""
    n = samples_per_prompt(spec, purpose)
    out = []
    for ref in prompts:
        for index in range(peer * n, (peer + 1) * n):
            seed = derive_seed(
                spec.seed, "sample", round_index, purpose, ref.prompt.content_hash, index
            )
            out.append(
                GenerationRequest(
                    prompt_id=ref.id, sample_index=index, seed=seed, prompt=ref.prompt.text
                )
            )
    return out


def _peer_seed(seed: int, peer: int, *labels: object) -> int:
    return derive_seed(seed, *labels) if peer == 0 else derive_seed(seed, *labels, "peer", peer)


def init_seed(spec: RunSpec, peer: int = 0) -> int:
    """The seed that initialises a built-in tiny model's weights (per peer)."""
    return _peer_seed(spec.seed, peer, "init") % 2**32


def verifier_versions(spec: RunSpec) -> dict[str, str]:
    """Each of the run's verifiers by name, with the version its code and configuration
    have now (what the score stage writes, the manifest records and selection and
    evaluation read)."""
    from dataflywheel.verifiers import build

    return {c.name: build(c).version for c in spec.verification.verifiers}


def train_config(spec: RunSpec, round_index: int, peer: int = 0) -> TrainConfig:
    """The trainer's configuration for a round (the warm-up overrides steps and rate); each
    peer gets its own seed (data order), peer 0 the run's."""
    t = spec.training
    lora = t.lora
    warmup = spec.warmup if round_index == WARMUP_INDEX else None
    return TrainConfig(
        method="sft" if warmup else t.method,
        mode="full" if warmup and t.mode == "full" else t.mode,
        lora_r=lora.r if lora else 16,
        lora_alpha=lora.alpha if lora else 32.0,
        lora_dropout=lora.dropout if lora else 0.05,
        lora_target_modules=tuple(lora.target_modules)
        if lora
        else ("q_proj", "k_proj", "v_proj", "o_proj"),
        learning_rate=(warmup.learning_rate or t.learning_rate) if warmup else t.learning_rate,
        epochs=None if warmup else t.epochs,
        max_steps=warmup.max_steps if warmup else t.max_steps,
        batch_size=t.batch_size,
        beta=t.beta if t.beta is not None else 0.1,
        # numpy (seeded by transformers' set_seed) takes 32-bit seeds only.
        seed=_peer_seed(spec.seed, peer, "train", round_index) % 2**32,
        dtype=spec.train_precision,
        lr_scheduler=t.lr_scheduler,
        warmup_ratio=t.warmup_ratio,
        weight_decay=t.weight_decay,
        adam_beta2=t.adam_beta2,
        num_threads=t.num_threads,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        gradient_checkpointing=t.gradient_checkpointing,
        strategy=t.strategy,
        checkpoint_dtype=t.checkpoint_dtype,
        deterministic=spec.bitwise,
    )
