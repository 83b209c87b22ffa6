"""Two transactions that write rows of the same round and then add compute seconds to it
(two peers' generate shards committing at once) must not deadlock.

Each writes a ledger row first (its foreign key takes a key-share lock on the round), waits
until the other has too, then updates the round's manifest through ``add_compute_seconds``.
With a plain ``FOR UPDATE`` each waits for the other's key-share lock and PostgreSQL kills
one of them ("deadlock detected"); the lock must be one that key-share locks do not block.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataflywheel.db import models as m
from dataflywheel.db import queries


def test_concurrent_shard_commits_of_one_round_do_not_deadlock(engine: sa.Engine) -> None:
    with Session(engine) as session, session.begin():
        run = m.Run(name="locks", spec={}, spec_hash="0" * 64)
        session.add(run)
        session.flush()
        rnd = m.Round(run_id=run.id, index=1, seed=1)
        session.add(rnd)
        session.flush()
        round_id = rnd.id
    both_wrote = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def commit_shard(stage: str) -> None:
        try:
            with Session(engine) as session, session.begin():
                queries.plan_shards(session, round_id, stage, ["d" * 64])  # key-share lock
                both_wrote.wait()
                queries.add_compute_seconds(session, round_id, stage, 1.5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=commit_shard, args=(s,)) for s in ("gen", "gen_peer1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    with Session(engine) as session:
        manifest = session.get(m.Round, round_id).manifest
    assert manifest["compute_seconds"] == {"gen": 1.5, "gen_peer1": 1.5}
