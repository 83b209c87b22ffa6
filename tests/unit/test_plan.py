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
