"""The transformers backend's per-batch RNG seed depends on the requests, not on row ids."""

from __future__ import annotations

from dataclasses import replace

from dataflywheel.generation import GenerationRequest
from dataflywheel.generation.hf import batch_seed


def _requests() -> list[GenerationRequest]:
    return [
        GenerationRequest(prompt_id=10 + i, sample_index=i % 2, seed=1000 + i, prompt=f"p{i}")
        for i in range(4)
    ]


def test_batch_seed_ignores_database_row_ids() -> None:
    # Prompt row ids depend on which task inserted a prompt first: two runs of one spec in
    # fresh databases give the same prompt other ids, and must still sample the same texts.
    requests = _requests()
    renumbered = [replace(r, prompt_id=r.prompt_id + 500) for r in requests]
    assert batch_seed(renumbered) == batch_seed(requests)


def test_batch_seed_follows_the_requests_seeds_indices_and_order() -> None:
    requests = _requests()
    assert batch_seed([replace(requests[0], seed=7), *requests[1:]]) != batch_seed(requests)
    assert batch_seed([replace(requests[0], sample_index=5), *requests[1:]]) != batch_seed(requests)
    assert batch_seed(requests[::-1]) != batch_seed(requests)
