"""Round planning is a pure, deterministic function of the spec and the round index."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataflywheel.rounds import plan
from dataflywheel.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def spec():
    return load_spec(EXAMPLES / "arithmetic-selfimprove.yaml")


def test_rounds_start_with_the_warmup(spec) -> None:
    assert plan.round_indices(spec) == [0, *range(1, spec.rounds + 1)]
    no_warmup = spec.model_copy(update={"warmup": None})
    assert plan.round_indices(no_warmup) == list(range(1, spec.rounds + 1))


def test_train_prompts_are_fresh_each_round_and_reproducible(spec) -> None:
    band = plan.initial_band(spec)
    first = plan.train_prompts(spec, 1, band)
    assert [p.content_hash for p in first] == [
        p.content_hash for p in plan.train_prompts(spec, 1, band)
    ]
    second = {p.content_hash for p in plan.train_prompts(spec, 2, band)}
    assert len(first) == spec.prompts.num_prompts
    assert {p.content_hash for p in first} != second
    assert all(p.split == "train" and band[0] <= p.difficulty <= band[1] for p in first)


def test_eval_prompts_are_held_out_and_fixed(spec) -> None:
    held_out = plan.eval_prompts(spec)
    assert [p.content_hash for p in held_out] == [p.content_hash for p in plan.eval_prompts(spec)]
    train_texts = {p.text for i in (1, 2, 3) for p in plan.train_prompts(spec, i, (1, 4))}
    assert not train_texts & {p.text for p in held_out}


def test_sample_seeds_follow_content_not_database_ids(spec) -> None:
    prompts = plan.train_prompts(spec, 1, plan.initial_band(spec))[:3]
    a = plan.requests(spec, 1, "train", [plan.PromptRef(i, p) for i, p in enumerate(prompts)])
    b = plan.requests(spec, 1, "train", [plan.PromptRef(100 + i, p) for i, p in enumerate(prompts)])
    assert [r.seed for r in a] == [r.seed for r in b]
    assert len(a) == 3 * spec.generation.samples_per_prompt
    assert len({r.seed for r in a}) == len(a)
    other_round = plan.requests(spec, 2, "train", [plan.PromptRef(0, prompts[0])])
    assert other_round[0].seed != a[0].seed


def test_warmup_training_config_overrides_steps_and_rate(spec) -> None:
    warm = plan.train_config(spec, plan.WARMUP_INDEX)
    assert warm.max_steps == spec.warmup.max_steps
    assert warm.learning_rate == spec.warmup.learning_rate
    later = plan.train_config(spec, 1)
    assert later.max_steps == spec.training.max_steps
    assert later.seed != warm.seed


def test_curriculum_raises_the_band_past_the_threshold(spec) -> None:
    assert plan.next_band(spec, (1, 4), 0.99) == (1, 4)  # no curriculum: the band stays
    data = spec.model_dump()
    data["prompts"]["fixed_width"] = None  # the curriculum widens operands past 4 digits
    data["curriculum"] = {"threshold": 0.9, "step": 1, "max_level": 6, "mode": "shift"}
    spec = spec.model_validate(data)
    band = plan.initial_band(spec)
    assert plan.next_band(spec, band, 0.1) == band
    assert plan.next_band(spec, band, 0.95) == (band[0] + 1, band[1] + 1)  # mode: shift
    assert plan.next_band(spec, band, None) == band


def test_peers_take_their_own_sample_indices_seeds_and_inits(spec) -> None:
    prompts = plan.train_prompts(spec, 1, plan.initial_band(spec))[:2]
    refs = [plan.PromptRef(i, p) for i, p in enumerate(prompts)]
    n = spec.generation.samples_per_prompt
    own, peer = plan.requests(spec, 1, "train", refs), plan.requests(spec, 1, "train", refs, 1)
    assert sorted({r.sample_index for r in own}) == list(range(n))
    assert sorted({r.sample_index for r in peer}) == list(range(n, 2 * n))
    assert not {r.seed for r in own} & {r.seed for r in peer}
    assert plan.train_config(spec, 1).seed != plan.train_config(spec, 1, 1).seed
    assert plan.init_seed(spec) != plan.init_seed(spec, 1)
    # Peer 0 keeps the seeds a run without peers has, so adding peers changes no old run.
    assert plan.train_config(spec, 1, 0) == plan.train_config(spec, 1)


def test_train_config_carries_the_trainer_thread_count(spec) -> None:
    assert plan.train_config(spec, 1).num_threads is None
    threaded = spec.model_copy(
        update={"training": spec.training.model_copy(update={"num_threads": 2})}
    )
    assert plan.train_config(threaded, 1).num_threads == 2
    assert plan.train_config(threaded, plan.WARMUP_INDEX).num_threads == 2


def _with_curriculum(spec, **fields):
    data = spec.model_dump()
    data["prompts"].update(fixed_width=None, min_difficulty=1, max_difficulty=1, num_prompts=50)
    data["evaluation"]["num_prompts"] = 60
    data["curriculum"] = {"threshold": 0.9, "max_level": 3, **fields}
    return spec.model_validate(data)


def test_a_top_level_gate_evaluates_every_level_on_its_own_held_out_prompts(spec) -> None:
    gated = _with_curriculum(spec)
    held_out = plan.eval_prompts(gated)
    by_level: dict[int, list] = {}
    for p in held_out:
        by_level.setdefault(p.difficulty, []).append(p)
    # 60 prompts spread over levels 1-3; 1-digit addition holds only 9 held-out problems.
    assert {lv: len(ps) for lv, ps in by_level.items()} == {1: 9, 2: 20, 3: 20}
    assert all(p.split == "eval" for p in held_out)
    assert [p.content_hash for p in plan.eval_prompts(gated)] == [p.content_hash for p in held_out]
    # Never trained on: no eval prompt is among a round's training prompts at any level.
    trained = {p.content_hash for p in plan.train_prompts(gated, 1, (1, 3))}
    assert trained.isdisjoint(p.content_hash for p in held_out)
    # gate: primary keeps the run-wide eval set of the first band.
    primary = _with_curriculum(spec, gate="primary")
    primary = primary.model_copy(
        update={"evaluation": primary.evaluation.model_copy(update={"num_prompts": 9})}
    )
    assert {p.difficulty for p in plan.eval_prompts(primary)} == {1}


def test_fixed_width_band_pads_to_the_band_top_so_longer_levels_are_longer(spec) -> None:
    gated = _with_curriculum(spec)
    data = gated.model_dump()
    data["prompts"]["fixed_width"] = "band"
    banded = spec.model_validate(data)
    for top in (1, 2, 3):
        prompts = plan.train_prompts(banded, 1, (1, top))
        # reversed digits, both operands padded to the band's top: "a+b=" is 2·top + 2 long.
        assert {len(p.text) for p in prompts} == {2 * top + 2}
        assert {p.metadata["answer_width"] for p in prompts} == {top + 1}
        assert {len(p.reference["answer"]) for p in prompts} == {top + 1}
    # Each held-out level is a band of its own: padded to itself, the same for every round.
    for p in plan.eval_prompts(banded):
        assert len(p.text) == 2 * p.difficulty + 2
    # Unpadded (null): operands at their natural width, so lengths vary within a band.
    natural = plan.train_prompts(gated, 1, (1, 3))
    assert len({len(p.text) for p in natural}) > 1
    assert all("answer_width" not in p.metadata for p in natural)


def test_lower_share_draws_a_round_at_the_frontier(spec) -> None:
    spread = _with_curriculum(spec)
    frontier = _with_curriculum(spec, lower_share=0.25)
    prompts = plan.train_prompts(frontier, 2, (1, 3))
    levels = [p.difficulty for p in prompts]
    # 50 problems: 38 at the band's top (the level just reached), 12 over the levels below.
    assert len(prompts) == 50 and levels.count(3) == 38
    assert set(levels) == {1, 2, 3}
    assert all(p.split == "train" for p in prompts)
    assert [p.content_hash for p in plan.train_prompts(frontier, 2, (1, 3))] == [
        p.content_hash for p in prompts
    ]
    # A one-level band has no lower levels; null keeps the even spread over the band.
    assert plan.train_prompts(frontier, 1, (1, 1)) == plan.train_prompts(spread, 1, (1, 1))
    assert plan.frontier_split(spread, (1, 3)) is None
    assert plan.frontier_split(frontier, (2, 3)) == (38, 12)
    evenly = [p.difficulty for p in plan.train_prompts(spread, 2, (1, 3))]
    assert evenly.count(3) < 38
    # Padded as the whole band: the lower levels too, with fixed_width band.
    data = frontier.model_dump()
    data["prompts"]["fixed_width"] = "band"
    banded = plan.train_prompts(spec.model_validate(data), 2, (1, 3))
    assert {len(p.text) for p in banded} == {8}
