"""Selection recipes: rejection sampling, majority-vote self-labelling, preference pairs,
best-of-N.

Runs in: the test process (pure).
"""

from __future__ import annotations

import random

import pytest

from dataflywheel import recipes
from dataflywheel.recipes import Candidate, PreferencePair, PromptFacts, SftRow, group_by_prompt
from dataflywheel.recipes.best_of_n import BestOfNConfig
from dataflywheel.recipes.majority import MajorityVoteSelectionConfig
from dataflywheel.recipes.preference import PreferencePairsConfig
from dataflywheel.recipes.rejection import RejectionSamplingConfig
from dataflywheel.verifiers import Score

PASS, FAIL, UNSCORABLE = Score.scored(True, "match"), Score.scored(False, "mismatch"), None


def _cand(
    prompt: int | str,
    index: int,
    text: str | None = None,
    answer: str | None = None,
    **scores: Score | float | None,
) -> Candidate:
    """A candidate; a float score means a scored value, None means unscorable."""
    built = {}
    for name, score in scores.items():
        if score is None:
            built[name] = Score.unscorable("timeout")
        elif isinstance(score, float):
            built[name] = Score.scored(score >= 0.5, "graded", score)
        else:
            built[name] = score
    text = text if text is not None else f"p{prompt}-s{index}"
    return Candidate(f"{prompt}:{index}", prompt, index, text, answer, built)


def _select(
    candidates: list[Candidate], config, seed: int = 0, **kwargs
) -> recipes.SelectionResult:
    return recipes.select(candidates, config, seed=seed, **kwargs)


# --- shared ----------------------------------------------------------------------------------


def test_group_by_prompt_orders_and_refuses_duplicates() -> None:
    cands = [_cand(2, 1), _cand(10, 0), _cand(2, 0), _cand("b", 0), _cand("a", 3)]
    groups = group_by_prompt(cands)
    assert [pid for pid, _ in groups] == [2, 10, "a", "b"]
    assert [c.sample_index for c in groups[0][1]] == [0, 1]
    with pytest.raises(ValueError, match="two candidates for prompt 2 sample 0"):
        group_by_prompt([_cand(2, 0), _cand(2, 0)])


def test_unknown_recipe_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown recipe"):
        recipes.select([], object(), seed=0)  # type: ignore[arg-type]


# --- rejection sampling ----------------------------------------------------------------------


def test_rejection_keeps_passing_samples_and_counts_each_filter() -> None:
    cands = [
        _cand(1, 0, exact=PASS),
        _cand(1, 1, exact=FAIL),
        _cand(1, 2, exact=UNSCORABLE),
        _cand(1, 3, text="p1-s0", exact=PASS),  # same text as sample 0
        _cand(2, 0, exact=FAIL),
    ]
    result = _select(cands, RejectionSamplingConfig())
    assert result.rows == (SftRow(1, "1:0", "p1-s0"),)
    stats = result.stats
    assert (stats.seen, stats.kept) == (5, 1)
    assert stats.counts == {
        "prompts": 2,
        "passed": 2,
        "failed": 2,
        "unscorable": 1,
        "duplicate": 1,
        "over_cap": 0,
        "prompts_kept": 1,
    }
    assert stats.as_dict()["yield"] == pytest.approx(0.2)


def test_rejection_dedup_is_per_prompt_and_optional() -> None:
    cands = [
        _cand(1, 0, text="19", exact=PASS),
        _cand(2, 0, text="19", exact=PASS),
        _cand(2, 1, text="19", exact=PASS),
    ]
    deduped = _select(cands, RejectionSamplingConfig())
    assert [(r.prompt_id, r.sample_id) for r in deduped.rows] == [(1, "1:0"), (2, "2:0")]
    kept_all = _select(cands, RejectionSamplingConfig(deduplicate=False))
    assert len(kept_all.rows) == 3


def test_rejection_requires_every_listed_verifier() -> None:
    cands = [_cand(1, 0, exact=PASS, fmt=FAIL), _cand(1, 1, exact=PASS, fmt=PASS)]
    assert [r.sample_id for r in _select(cands, RejectionSamplingConfig()).rows] == ["1:1"]
    only_exact = RejectionSamplingConfig(require=["exact"])
    assert [r.sample_id for r in _select(cands, only_exact).rows] == ["1:0", "1:1"]


def test_rejection_missing_scores_raise() -> None:
    with pytest.raises(ValueError, match="no score from verifier 'exact'"):
        _select([_cand(1, 0, fmt=PASS)], RejectionSamplingConfig(require=["exact"]))
    with pytest.raises(ValueError, match="has no scores"):
        _select([_cand(1, 0)], RejectionSamplingConfig())


def test_rejection_cap_is_seeded_deterministic_and_ordered() -> None:
    cands = [_cand(p, i, exact=PASS) for p in range(3) for i in range(10)]
    config = RejectionSamplingConfig(max_per_prompt=3)
    first = _select(cands, config, seed=5)
    shuffled = cands[:]
    random.Random(1).shuffle(shuffled)
    assert _select(shuffled, config, seed=5).rows == first.rows  # input order is irrelevant
    assert first.stats.counts["over_cap"] == 21 and len(first.rows) == 9
    keys = [(r.prompt_id, int(str(r.sample_id).split(":")[1])) for r in first.rows]
    assert keys == sorted(keys)
    draws = {_select(cands, config, seed=s).rows for s in range(8)}
    assert len(draws) > 1  # the seed matters
    per_prompt = {tuple(k[1] for k in keys if k[0] == p) for p in range(3)}
    assert len(per_prompt) > 1  # and each prompt draws with its own stream
    # a prompt's draw does not depend on which other prompts are present
    alone = _select([c for c in cands if c.prompt_id == 1], config, seed=5)
    assert alone.rows == tuple(r for r in first.rows if r.prompt_id == 1)


# --- majority vote ---------------------------------------------------------------------------


def test_majority_labels_with_the_majority_answer() -> None:
    cands = [_cand(1, i, answer=a) for i, a in enumerate(["975", "975", "974", "975", None])]
    result = _select(cands, MajorityVoteSelectionConfig(min_agreement=0.6))
    assert result.rows == (SftRow(1, "1:0", "975", label="975"),)
    assert result.stats.counts["samples_no_answer"] == 1
    # no-answer samples count against agreement: 3 of 5 is 0.6, not 3 of 4
    strict = _select(cands, MajorityVoteSelectionConfig(min_agreement=0.7))
    assert strict.rows == () and strict.stats.counts["prompts_low_agreement"] == 1


def test_majority_target_sample_keeps_the_first_agreeing_text() -> None:
    cands = [
        _cand(1, 0, text="so 18", answer="18"),
        _cand(1, 1, text="hence 19", answer="19"),
        _cand(1, 2, text="thus 19", answer=" 19 "),
    ]
    (row,) = _select(cands, MajorityVoteSelectionConfig(target="sample")).rows
    assert row == SftRow(1, "1:1", "hence 19", label="19")


def test_majority_drops_ties_and_silent_prompts() -> None:
    cands = [
        _cand(1, 0, answer="1"),
        _cand(1, 1, answer="2"),
        _cand(2, 0, answer=None),
        _cand(2, 1, answer="  "),
    ]
    result = _select(cands, MajorityVoteSelectionConfig(min_agreement=0.5))
    assert result.rows == ()
    assert (
        result.stats.counts["prompts_tied"] == 1 and result.stats.counts["prompts_no_answer"] == 1
    )


def test_majority_length_filter() -> None:
    # expected length 4 with band [0.5, 1.0] keeps answers of 2-4 characters
    cands = [_cand(1, i, answer=a) for i, a in enumerate(["12345", "12345", "12345", "1234", "1"])]
    config = MajorityVoteSelectionConfig(
        min_agreement=0.2, min_length_ratio=0.5, max_length_ratio=1.0
    )
    result = _select(cands, config, facts={1: PromptFacts(expected_length=4)})
    assert [r.label for r in result.rows] == ["1234"]
    assert result.stats.counts["samples_length_filtered"] == 4
    # without the filter the overlong answer wins the vote
    assert [r.label for r in _select(cands, MajorityVoteSelectionConfig()).rows] == ["12345"]


def test_majority_length_filter_needs_expected_lengths() -> None:
    config = MajorityVoteSelectionConfig(min_length_ratio=0.5, max_length_ratio=2.0)
    with pytest.raises(ValueError, match="expected answer length for prompt 1"):
        _select([_cand(1, 0, answer="3")], config, facts={})


def test_majority_fixed_width_filters_format_and_measures_significant_digits() -> None:
    # Reversed answers padded to 5: "86100" is 168 (3 significant digits); expected ≤ 4.
    facts = {1: PromptFacts(expected_length=4, answer_width=5, reversed_digits=True)}
    answers = ["86100", "86100", "8610", "86100x", "00000", "86100"]
    cands = [_cand(1, i, answer=a) for i, a in enumerate(answers)]
    config = MajorityVoteSelectionConfig(
        min_agreement=0.5, min_length_ratio=0.75, max_length_ratio=1.0
    )
    result = _select(cands, config, facts=facts)
    assert [r.label for r in result.rows] == ["86100"]
    assert result.stats.counts["samples_format_filtered"] == 2  # "8610" and "86100x"
    assert result.stats.counts["samples_length_filtered"] == 1  # "00000" is 0: one digit
    assert PromptFacts(answer_width=5, reversed_digits=False).significant("00168") == "168"


def test_majority_across_views_keeps_a_problem_only_when_every_view_agrees() -> None:
    # Prompts 1/2 pose one problem both ways and agree; 3/4 disagree; 5/6: one view is weak.
    facts = {
        pid: PromptFacts(vote_group=group)
        for pid, group in {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c", 7: None}.items()
    }
    votes = {1: "42", 2: "42", 3: "17", 4: "71", 5: "9", 6: None, 7: "5"}
    cands = [
        _cand(pid, i, answer=(answer if i < 3 or pid == 6 else "0"))
        for pid, answer in votes.items()
        for i in range(4)
    ]
    config = MajorityVoteSelectionConfig(min_agreement=0.75, agree_across_views=True)
    result = _select(cands, config, facts=facts)
    assert [(r.prompt_id, r.label) for r in result.rows] == [(1, "42"), (2, "42"), (7, "5")]
    assert result.stats.counts["prompts_views_disagree"] == 3  # 3, 4 and 5
    assert result.stats.counts["prompts_no_answer"] == 1  # 6
    # Without the view rule each prompt stands alone.
    alone = _select(cands, MajorityVoteSelectionConfig(min_agreement=0.75), facts=facts)
    assert [r.prompt_id for r in alone.rows] == [1, 2, 3, 4, 5, 7]


def test_majority_across_peers_keeps_a_prompt_only_when_every_peer_agrees() -> None:
    def peer_cands(prompt: int, peer: int, answers: list[str]) -> list[Candidate]:
        return [
            Candidate(f"{prompt}:{peer}:{i}", prompt, peer * 4 + i, a, a, {}, source=peer)
            for i, a in enumerate(answers)
        ]

    cands = (
        peer_cands(1, 0, ["7", "7", "7", "7"])  # both peers sure of 7: kept
        + peer_cands(1, 1, ["7", "7", "7", "1"])
        + peer_cands(2, 0, ["5", "5", "5", "5"])  # peer 1 is sure of another answer
        + peer_cands(2, 1, ["6", "6", "6", "6"])
        + peer_cands(3, 0, ["9", "9", "9", "9"])  # pooled 7/8 agree, but peer 1 only 3/4...
        + peer_cands(3, 1, ["9", "9", "9", "2"])
        + peer_cands(4, 0, ["8", "8", "8", "8"])  # ...and here peer 1 only 2/4
        + peer_cands(4, 1, ["8", "8", "3", "4"])
    )
    config = MajorityVoteSelectionConfig(min_agreement=0.75, agree_across_peers=True)
    result = _select(cands, config)
    assert [(r.prompt_id, r.label) for r in result.rows] == [(1, "7"), (3, "9")]
    counts = result.stats.counts
    assert counts["prompts_tied"] == 1  # prompt 2: pooled 4 against 4
    assert counts["prompts_peers_disagree"] == 1  # prompt 4: peer 1 below 0.75
    # Pooled (one model's view of all 8 samples) prompt 4 would pass at 0.75.
    pooled = _select(cands, MajorityVoteSelectionConfig(min_agreement=0.75))
    assert [r.prompt_id for r in pooled.rows] == [1, 3, 4]


def test_majority_config_band_must_be_whole_and_ordered() -> None:
    with pytest.raises(ValueError, match="set both"):
        MajorityVoteSelectionConfig(min_length_ratio=0.5)
    with pytest.raises(ValueError, match="must be ≤ max_length_ratio"):
        MajorityVoteSelectionConfig(min_length_ratio=2.0, max_length_ratio=1.0)


# --- preference pairs ------------------------------------------------------------------------


def test_preference_pairs_best_against_worst() -> None:
    cands = [
        _cand(1, 0, r=0.5),
        _cand(1, 1, r=1.0),
        _cand(1, 2, r=0.0),
        _cand(1, 3, r=1.0),
        _cand(1, 4, r=0.0),
    ]
    result = _select(cands, PreferencePairsConfig(margin=0.5))
    # ties go to the lowest sample index on both sides
    assert result.rows == (PreferencePair(1, "1:1", "1:2", "p1-s1", "p1-s2", 1.0, 0.0),)
    assert result.rows[0].margin == 1.0
    assert result.stats.details["pair_policy"] == "best_vs_worst"


def test_preference_margin_too_few_and_unscorable() -> None:
    cands = [
        _cand(1, 0, r=0.6),
        _cand(1, 1, r=0.4),  # gap 0.2 < margin
        _cand(2, 0, r=1.0),
        _cand(2, 1, r=None),  # one scorable sample only
        _cand(3, 0, r=1.0),
        _cand(3, 1, r=1.0),  # all equal
        _cand(4, 0, r=0.0),
        _cand(4, 1, r=1.0),
    ]
    result = _select(cands, PreferencePairsConfig(margin=0.5))
    assert [(p.prompt_id, p.chosen_sample_id) for p in result.rows] == [(4, "4:1")]
    counts = result.stats.counts
    assert (counts["prompts_below_margin"], counts["prompts_too_few"]) == (2, 1)
    assert counts["samples_unscorable"] == 1
    # margin 0 still refuses equal scores
    assert {p.prompt_id for p in _select(cands, PreferencePairsConfig(margin=0.0)).rows} == {1, 4}


def test_preference_score_by_one_verifier_or_the_mean() -> None:
    cands = [_cand(1, 0, a=1.0, b=0.0), _cand(1, 1, a=0.0, b=0.2)]
    by_b = _select(cands, PreferencePairsConfig(score_by="b", margin=0.1))
    assert by_b.rows[0].chosen_sample_id == "1:1"
    by_mean = _select(cands, PreferencePairsConfig(margin=0.1))
    assert by_mean.rows[0].chosen_sample_id == "1:0"
    assert by_mean.rows[0].chosen_score == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no score from verifier 'c'"):
        _select(cands, PreferencePairsConfig(score_by="c"))


# --- best-of-N -------------------------------------------------------------------------------


def test_best_of_n_keeps_the_top_k_per_prompt_in_sample_order() -> None:
    cands = [
        _cand(2, 0, r=0.2),
        _cand(1, 3, r=0.9),
        _cand(1, 0, r=0.1),
        _cand(1, 1, r=0.9),  # ties with sample 3: the lower index ranks first
        _cand(1, 2, r=0.7),
        _cand(2, 1, r=0.0),
    ]
    result = _select(cands, BestOfNConfig(score_by="r", k=2))
    # Prompt 1: 0.9 (s1) and 0.9 (s3) beat 0.7 and 0.1; prompt 2 has only two, both kept.
    kept = [(r.prompt_id, r.sample_id) for r in result.rows]
    assert kept == [(1, "1:1"), (1, "1:3"), (2, "2:0"), (2, "2:1")]
    assert all(isinstance(r, SftRow) and r.label is None for r in result.rows)
    assert result.stats.counts["outranked"] == 2
    assert result.stats.details == {"score_by": "r", "k": 2}
    # Input order does not matter.
    assert _select(list(reversed(cands)), BestOfNConfig(score_by="r", k=2)).rows == result.rows
    # k=1: the best of each prompt, even one that no verifier would pass (prompt 2: 0.2).
    k1 = _select(cands, BestOfNConfig(score_by="r", k=1))
    assert [r.sample_id for r in k1.rows] == ["1:1", "2:0"]


def test_best_of_n_floor_duplicates_and_unscorable() -> None:
    cands = [
        _cand(1, 0, "same", r=0.8),
        _cand(1, 1, "same", r=0.9),  # a repeat of sample 0's text: dropped before ranking
        _cand(1, 2, r=None),
        _cand(1, 3, r=0.3),
        _cand(2, 0, r=0.4),
    ]
    result = _select(cands, BestOfNConfig(score_by="r", k=2, min_score=0.5))
    assert [r.sample_id for r in result.rows] == ["1:0"]
    counts = result.stats.counts
    assert (counts["duplicate"], counts["unscorable"], counts["below_min_score"]) == (1, 1, 2)
    assert (counts["prompts"], counts["prompts_kept"]) == (2, 1)
    assert result.stats.details["min_score"] == 0.5
    kept_all = _select(cands, BestOfNConfig(score_by="r", k=3, deduplicate=False))
    assert [r.sample_id for r in kept_all.rows] == ["1:0", "1:1", "1:3", "2:0"]


def test_best_of_n_ranks_by_the_mean_of_all_scores_by_default() -> None:
    cands = [_cand(1, 0, a=1.0, b=0.0), _cand(1, 1, a=0.0, b=0.8)]
    assert [r.sample_id for r in _select(cands, BestOfNConfig()).rows] == ["1:0"]
    assert [r.sample_id for r in _select(cands, BestOfNConfig(score_by="b")).rows] == ["1:1"]
    with pytest.raises(ValueError, match="no score from verifier 'c'"):
        _select(cands, BestOfNConfig(score_by="c"))
