"""Peers end to end: two models trained side by side vote on pseudo-labels (training.peers),
on fixed-width addition posed both ways (prompts.commuted_views) — the rows they leave.

The run shares one GPU between its two peers' generators and trainers (``resources.
gpu_sharing: colocate``), declared to the local Ray it starts: Ray schedules by the declared
GPU while the models run on CPU, so every placement decision is the one a one-GPU node sees.
It must finish (no reservation waits forever), and the leases it records must show that no
training overlapped an awake generator or another peer's training on that GPU."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from dataflywheel.config import Settings
from dataflywheel.db.session import make_engine
from dataflywheel.gpu.placement_fit import PlacementError
from dataflywheel.spec import load_spec

pytestmark = pytest.mark.slow


def _strong(answers: list[str], share: float) -> str | None:
    (winner, votes), *rest = Counter(answers).most_common() or [(None, 0)]
    tied = bool(rest) and rest[0][1] == votes
    return winner if winner is not None and not tied and votes / len(answers) >= share else None


def test_peers_vote_and_views_agree(
    flywheel_env: Settings, tiny_spec: dict, db_url: str, tmp_path: Path
) -> None:
    tiny_spec["rounds"] = 1
    tiny_spec["prompts"].update(
        reversed_digits=True, fixed_width=2, commuted_views=True, min_difficulty=1
    )
    # Greedy: each peer's two samples agree, so whether a prompt is kept turns on whether
    # the two peers (and the two views) agree with each other.
    tiny_spec["generation"].update(samples_per_prompt=2, temperature=0.0, max_tokens=4)
    tiny_spec["warmup"].update(max_steps=150, num_prompts=80)
    tiny_spec["training"]["peers"] = 2
    tiny_spec["selection"] = {
        "recipe": "majority_vote",
        "min_agreement": 0.5,
        "agree_across_peers": True,
        "agree_across_views": True,
    }
    tiny_spec["resources"] = {
        **tiny_spec.get("resources", {}),
        "gpu_sharing": "colocate",
        "generator_gpus": 1,
        "train_gpus_per_worker": 1,
        "gpu_memory_gib": 1,
    }
    # The numbers stay CPU's: float32 training, bit-exact kernels.
    tiny_spec["training"]["precision"] = "float32"
    tiny_spec["reproducibility"] = "bitwise"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    from flows.flywheel_run import flywheel_run

    os.environ["FLYWHEEL_RAY_NUM_GPUS"] = "1"  # flywheel_env restores the environment
    # The same run on dedicated GPUs would hold 2 generators and 2 trainers at once: refused
    # before anything is registered, instead of a training that waits forever.
    dedicated = {**tiny_spec, "resources": {**tiny_spec["resources"], "gpu_sharing": "dedicated"}}
    (tmp_path / "dedicated.yaml").write_text(yaml.safe_dump(dedicated))
    with pytest.raises(PlacementError, match="resources.gpu_sharing to colocate"):
        flywheel_run(load_spec(tmp_path / "dedicated.yaml"))
    with make_engine(db_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == 0

    run_id = flywheel_run(load_spec(spec_file))
    _check_leases(db_url, run_id)

    with make_engine(db_url).connect() as conn:
        q = lambda sql, **kw: conn.execute(sa.text(sql), kw).all()  # noqa: E731
        assert q("SELECT status FROM runs WHERE id = :r", r=run_id) == [("succeeded",)]
        checkpoints = q(
            "SELECT c.id, r.index, c.peer, c.status, c.digest, c.parent_id FROM checkpoints c "
            "LEFT JOIN rounds r ON r.id = c.round_id WHERE c.run_id = :r ORDER BY 2, 3",
            r=run_id,
        )
        by_key = {(index, peer): row for row in checkpoints for index, peer in [row[1:3]]}
        # Each peer has its own base (its own init) and its own model per round; a round's
        # peers share its model's fate.
        assert by_key[(None, 0)][4] != by_key[(None, 1)][4]
        for index in (0, 1):
            if (index, 0) in by_key:
                assert by_key[(index, 0)][3] == by_key[(index, 1)][3]
        assert by_key[(0, 1)][5] == by_key[(None, 1)][0]  # peer 1 descends from peer 1

        # 12 problems, each posed both ways (a = b: once), 2 samples from each peer, written
        # by that peer's promoted model with its own sample indices.
        samples = q(
            "SELECT s.prompt_id, s.sample_index, c.peer, c.id, s.text, NULL FROM samples s "
            "JOIN rounds r ON r.id = s.round_id JOIN checkpoints c ON c.id = s.checkpoint_id "
            "WHERE r.run_id = :r AND r.index = 1 AND s.purpose = 'train'",
            r=run_id,
        )
        prompts = {s[0] for s in samples}
        assert 12 < len(prompts) <= 24
        assert len(samples) == len(prompts) * 4
        for _, index, peer, checkpoint, *_ in samples:
            assert index // 2 == peer and checkpoint == by_key[(0, peer)][0]
        eval_peers = q(
            "SELECT DISTINCT c.peer FROM samples s JOIN checkpoints c ON c.id = s.checkpoint_id "
            "WHERE s.purpose = 'eval' AND c.run_id = :r",
            r=run_id,
        )
        assert eval_peers == [(0,)]  # only the run's model is evaluated

        # The kept prompts are exactly those where both peers' majorities agree, in every view.
        answers: dict[tuple[int, int], list[str]] = defaultdict(list)
        group_of = {}
        operands = dict(
            q("SELECT id, array[(metadata->>'a')::int, (metadata->>'b')::int] FROM prompts")
        )
        for prompt_id, _, peer, _, text, _ in samples:
            answers[(prompt_id, peer)].append(text.strip())
            group_of[prompt_id] = tuple(sorted(operands[prompt_id]))  # the fact a+b = b+a
        assert len(set(group_of.values())) == 12
        label = {}
        for prompt_id in prompts:
            winners = {_strong(answers[(prompt_id, p)], 0.5) for p in (0, 1)}
            pooled = _strong(answers[(prompt_id, 0)] + answers[(prompt_id, 1)], 0.5)
            label[prompt_id] = pooled if len(winners) == 1 and pooled in winners else None
        groups = defaultdict(list)
        for prompt_id, group in group_of.items():
            groups[group].append(prompt_id)
        expected = {
            (pid, label[pid])
            for members in groups.values()
            if all(label[m] for m in members) and len({label[m] for m in members}) == 1
            for pid in members
        }
        kept = q(
            "SELECT m.prompt_id, m.label FROM dataset_members m JOIN datasets d "
            "ON d.id = m.dataset_id JOIN rounds r ON r.id = d.round_id "
            "WHERE r.run_id = :r AND r.index = 1",
            r=run_id,
        )
        print(f"kept {len(kept)} of {len(prompts)} prompts")
        assert set(kept) == expected
        assert 0 < len(kept) < len(prompts)  # the rule kept some and refused some


def _check_leases(db_url: str, run_id: int) -> None:
    """Every round's recorded GPU leases: each training ran on the one declared GPU after
    every generator had released it (an ``awake`` lease that ended before the training
    began), and no other lease (a generator's, the other peer's training) overlaps it."""
    with make_engine(db_url).connect() as conn:
        rounds = conn.execute(
            sa.text("SELECT index, manifest FROM rounds WHERE run_id = :r ORDER BY index"),
            {"r": run_id},
        ).all()
    leases = [lease for _, m in rounds for lease in (m or {}).get("gpu_leases", [])]
    trains = [x for x in leases if x["stage"] == "train"]
    awake = [x for x in leases if x["stage"] == "awake"]
    generating = [x for x in leases if x["stage"].startswith("generate")]
    # Warm-up and round 1 train both peers; generation ran in the baseline, round 1 and evals.
    assert len(trains) == 2 * 2 and awake and generating
    assert {tuple(x["gpus"]) for x in leases} == {("0",)}
    for train in trains:
        for other in leases:
            if other is train:
                continue
            apart = other["end"] <= train["start"] or other["start"] >= train["end"]
            assert apart, f"{train} overlaps {other}"
    # Each generator that served before a training gave the GPU back before it began.
    for train in trains:
        before = [g for g in generating if g["end"] <= train["start"]]
        for holder in {g["holder"] for g in before}:
            released = [a for a in awake if a["holder"] == holder and a["end"] <= train["start"]]
            assert released, f"{holder} never released the GPU before {train}"
