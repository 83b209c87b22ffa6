"""Resource declarations of the generator pool (workers/pool.py)."""

from __future__ import annotations

import pytest

from workers.pool import generator_cpus


@pytest.mark.parametrize("peers", [1, 2, 3, 4])
def test_a_runs_generators_reserve_one_cpu_together(peers: int) -> None:
    # Whatever the peer count, generation leaves the rest of a 2-core node to verification
    # and training (a reservation of one CPU per peer deadlocked 2 peers on 2 cores).
    assert generator_cpus(peers) * peers == pytest.approx(1.0)


def test_zero_peers_is_refused() -> None:
    with pytest.raises(ValueError, match="peers"):
        generator_cpus(0)
