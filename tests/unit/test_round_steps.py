"""The pure steps around a round's model work: scoring shards, the training mix, its JSONL."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dataflywheel.prompts import canonical_jsonl
from dataflywheel.rounds import shards
from dataflywheel.rounds.mix import training_mix
from dataflywheel.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass(frozen=True)
class Row:
    id: int
    prompt_id: int
    sample_index: int
    text: str


@dataclass(frozen=True)
class Data:
    id: int
    recipe: str | None
    kind: str
    rows: list[dict[str, Any]] = field(default_factory=list)


def _samples(per_prompt: list[int]) -> list[Row]:
    out: list[Row] = []
    for prompt_id, count in enumerate(per_prompt):
        out += [Row(len(out), prompt_id, k, f"{prompt_id}.{k}") for k in range(count)]
    return out


@pytest.mark.parametrize(
    ("per_prompt", "size", "expected"),
    [
        ([], 4, []),
        ([3, 2, 4, 1], 4, [[0, 1], [2], [3]]),  # a shard closes at the first prompt past size
        ([9], 4, [[0]]),  # a prompt is never split
        ([1, 1, 1], 10, [[0, 1, 2]]),
    ],
)
def test_scoring_shards_hold_whole_prompts(
    per_prompt: list[int], size: int, expected: list[list[int]]
) -> None:
    cut = shards.by_prompt(_samples(per_prompt), size)
    assert [sorted({item[1] for item in shard}) for shard in cut] == expected
    assert [item for shard in cut for item in shard] == [
        (r.id, r.prompt_id, r.sample_index, r.text) for r in _samples(per_prompt)
    ]


def test_a_shard_carries_only_the_prompts_it_answers() -> None:
    cut = shards.by_prompt(_samples([2, 1, 3]), 2)
    assert [shards.prompts_of(s, {0: "a", 1: "b", 2: "c"}) for s in cut] == [
        {0: "a"},
        {1: "b", 2: "c"},
    ]


def test_canonical_jsonl_is_one_sorted_compact_line_per_row() -> None:
    rows = [{"prompt": "1+1=", "completion": "2"}, {"b": "é", "a": [1, 2]}]
    assert canonical_jsonl(rows) == (
        b'{"completion":"2","prompt":"1+1="}\n{"a":[1,2],"b":"\xc3\xa9"}\n'
    )
    assert canonical_jsonl([]) == b""


def test_the_training_mix_is_seeded_and_shares_add_up() -> None:
    spec = load_spec(EXAMPLES / "arithmetic-selfimprove.yaml")
    training = spec.training.model_copy(update={"replay_share": 0.2, "labelled_share": 0.3})
    spec = spec.model_copy(update={"training": training})
    rows = [{"prompt": f"p{i}", "completion": str(i)} for i in range(10)]
    own = Data(3, "rejection_sampling", "sft", rows)
    earlier = [
        Data(1, "labelled", "sft", [{"prompt": "l", "completion": "0"}] * 4),
        Data(2, "rejection_sampling", "sft", rows[:5]),
        Data(4, "preference_pairs", "preference", [{"prompt": "x"}]),  # another kind
    ]
    read: list[int] = []

    def rows_of(d: Data) -> list[dict[str, Any]]:
        read.append(d.id)
        return d.rows

    mix, shares = training_mix(spec, 2, own, earlier, rows_of)
    assert mix[:10] == rows and len(mix) == 20  # own rows are half: 1 - 0.2 - 0.3
    assert dict(shares) == {3: 0.5, 2: 0.2, 1: 0.3}
    assert 4 not in read  # a dataset of another kind is never read
    assert training_mix(spec, 2, own, earlier, rows_of) == (mix, shares)
    assert training_mix(spec, 0, own, earlier, rows_of) == (rows, [(3, 1.0)])
