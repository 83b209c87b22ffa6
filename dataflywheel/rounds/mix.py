"""The training mix of a round: its own dataset, plus replayed and labelled shares.

Runs in: anywhere (pure, given a reader of dataset rows). The mix is the round's own
dataset plus, when the spec asks, a replayed share of earlier rounds' data (of the same kind)
and a share of the labelled warm-up data, drawn with the round's ``mix`` seed, so a resumed
or replayed round trains on the same rows in the same order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from dataflywheel.rounds.plan import WARMUP_INDEX
from dataflywheel.spec import RunSpec, derive_seed

Row = dict[str, Any]


class DatasetLike(Protocol):
    """What the mix needs of a dataset row (``db.models.Dataset``)."""

    id: int
    recipe: str | None
    kind: str


D = TypeVar("D", bound=DatasetLike)


def training_mix(
    spec: RunSpec,
    index: int,
    own: D,
    earlier: list[D],
    read: Callable[[D], list[Row]],
) -> tuple[list[Row], list[tuple[int, float]]]:
    """The rows round ``index`` trains on and each dataset's share of them; ``read`` gives a
    dataset's rows (called only for the datasets the mix may draw from)."""
    rows = read(own)
    t = spec.training
    if index == WARMUP_INDEX or not rows:
        return rows, [(own.id, 1.0)]
    rng = random.Random(derive_seed(spec.seed, "mix", index))
    total = round(len(rows) / (1 - t.replay_share - t.labelled_share))
    labelled = [d for d in earlier if d.recipe == "labelled"]
    replayable = [d for d in earlier if d.recipe != "labelled" and d.kind == own.kind]
    mix, shares = list(rows), [(own.id, len(rows))]
    for datasets, share in ((replayable, t.replay_share), (labelled, t.labelled_share)):
        pool = [(d.id, r) for d in datasets for r in read(d)]
        drawn = _draw(pool, round(total * share), rng) if share > 0 else []
        mix.extend(r for _, r in drawn)
        for dataset in datasets:
            count = sum(1 for did, _ in drawn if did == dataset.id)
            if count:
                shares.append((dataset.id, count))
    n = len(mix)
    return mix, [(dataset_id, count / n) for dataset_id, count in shares]


def _draw(rows: list[Any], n: int, rng: random.Random) -> list[Any]:
    if n <= 0 or not rows:
        return []
    return (
        [rows[rng.randrange(len(rows))] for _ in range(n)] if n > len(rows) else rng.sample(rows, n)
    )
