"""`flywheel check` on a run whose stored spec the spec now refuses: a violation naming the
field, not a pass and not a traceback.

Runs in: the test process, against a real PostgreSQL database.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from dataflywheel.db import invariants
from dataflywheel.db.session import session_scope

# What an OpenAI-backend run stored before the spec refused it: its samples name the run's
# checkpoints as their generators, though the endpoint never loaded them.
ENDPOINT_SPEC = {
    "name": "endpoint",
    "model": {"source": "builtin:tiny-llama"},
    "prompts": {"kind": "builtin", "family": "addition"},
    "generation": {
        "backend": "openai",
        "base_url": "http://localhost:8000/v1",
        "model_name": "m",
        "max_tokens": 16,
    },
}


def test_a_refused_stored_spec_is_a_violation_naming_the_field(engine: sa.Engine) -> None:
    with session_scope(engine) as session:
        run_id = session.execute(
            sa.text(
                "INSERT INTO runs (name, spec, spec_hash, status) "
                "VALUES ('endpoint', CAST(:spec AS jsonb), :hash, 'succeeded') RETURNING id"
            ),
            {"spec": json.dumps(ENDPOINT_SPEC), "hash": "0" * 64},
        ).scalar_one()
    with session_scope(engine) as session:
        found = invariants.check_run(session, run_id)
    assert [v.check for v in found] == ["spec"], found
    assert "generation.backend: 'openai' cannot generate for a run" in found[0].detail
