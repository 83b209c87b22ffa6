"""Scoring shards: a stage's samples cut into shards of whole prompts.

Runs in: anywhere (pure). A majority vote compares a prompt's samples with each other, so a
shard never splits a prompt: it closes at the first new prompt once it holds
``SAMPLES_PER_SHARD`` samples. The cut depends only on the samples and their order, so a
retried or resumed stage plans the same shards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, TypeVar

SAMPLES_PER_SHARD = 1024

ScoreItem = tuple[int, int, int, str]
"""One sample as a verification worker gets it: (id, prompt_id, sample_index, text)."""

T = TypeVar("T")


class SampleLike(Protocol):
    id: int
    prompt_id: int
    sample_index: int
    text: str


def by_prompt(
    samples: Iterable[SampleLike], size: int = SAMPLES_PER_SHARD
) -> list[list[ScoreItem]]:
    """``samples`` (ordered so that each prompt's samples are adjacent) in shards of at least
    ``size`` samples and whole prompts; the last shard may be smaller."""
    shards: list[list[ScoreItem]] = [[]]
    for row in samples:
        current = shards[-1]
        if len(current) >= size and current[-1][1] != row.prompt_id:
            shards.append(current := [])
        current.append((row.id, row.prompt_id, row.sample_index, row.text))
    return [s for s in shards if s]


def prompts_of(shard: list[ScoreItem], prompts: Mapping[int, T]) -> dict[int, T]:
    """The entries of ``prompts`` (by prompt id) that the shard's samples answer."""
    return {pid: prompts[pid] for pid in {s[1] for s in shard}}
