"""The reads behind ``flywheel export``: a dataset's members, a round's samples and a run's
evaluations streamed in batches, and the lineage facts their dataset card is made of.

Runs in: anywhere with a connection (the CLI, API handlers, benchmarks). Functions take a
SQLAlchemy ``Connection`` (psycopg underneath) and never commit. Rows stream through a
server-side cursor, one ``FETCH`` per batch, so a ten-million-row export holds one batch at a
time; each batch comes as columns by name, named after the fields of
:mod:`dataflywheel.export.schema`. A sample's scores come as one JSON array aggregated in SQL,
which Arrow's JSON reader turns into the list column: the export never builds a Python object
per score (one array column per score field, parsed by the driver, was slower:
docs/benchmarks.md). Rows come in a stable order that an index already provides: dataset
position; (purpose, prompt, sample index) for samples, the order of the round's natural key;
(evaluation, prompt) for results.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

Columns = dict[str, Sequence[Any]]
PURPOSES = ("train", "eval", "baseline")
_cursor_names = itertools.count()

# --------------------------------------------------------------------------- SQL: rows


def _scores(sample: str, name: str) -> str:
    """The scores of sample ``sample`` as one JSON array (text) in (verifier, version) order,
    the order of the index the subquery reads, so it needs no sort; NULL when it has none.
    jsonb, not json: its text form never holds a raw newline, so a batch of them is valid
    line-delimited JSON for Arrow's reader."""
    return f"""(
    SELECT jsonb_agg(jsonb_build_object(
               'verifier', x.verifier, 'verifier_version', x.verifier_version,
               'value', x.value, 'passed', x.passed, 'status', x.status, 'reason', x.reason,
               'details', x.details::text)
           ORDER BY x.verifier, x.verifier_version)
    FROM scores x
    WHERE x.sample_id = {sample})::text AS {name}"""


_PROMPT = (
    "p.id AS prompt_id, p.prompt_set, p.split AS prompt_split, "
    "p.reference::text AS reference, p.difficulty"
)
_GENERATION = (
    "s.checkpoint_id, c.digest AS checkpoint_digest, c.peer, s.sample_index, s.seed, "
    "s.sampling_params::text AS sampling_params"
)


def dataset_rows_sql(preference: bool) -> str:
    """A dataset's members in position order, with prompt, sample and scores; ``prompt_text``
    is the prompt as stored (the export checks the dataset file against it)."""
    rejected = (
        f", m.rejected_sample_id, {_scores('m.rejected_sample_id', 'rejected_scores')}"
        if preference
        else ""
    )
    return f"""
SELECT m.position, m.label, {_PROMPT}, p.text AS prompt_text,
       m.sample_id, r.index AS round_index, {_GENERATION},
       s.finish_reason, s.completion_tokens,
       {_scores("m.sample_id", "scores")}{rejected}
FROM dataset_members m
LEFT JOIN samples s ON s.id = m.sample_id
LEFT JOIN rounds r ON r.id = s.round_id
LEFT JOIN checkpoints c ON c.id = s.checkpoint_id
LEFT JOIN prompts p ON p.id = COALESCE(m.prompt_id, s.prompt_id)
WHERE m.dataset_id = :dataset_id
ORDER BY m.position"""


SAMPLES_SQL = f"""
SELECT s.id AS sample_id, r.run_id, r.index AS round_index, s.purpose,
       {_PROMPT}, p.text AS prompt, {_GENERATION},
       s.text AS completion, s.prompt_tokens, s.completion_tokens, s.finish_reason,
       (extract(epoch FROM s.created_at) * 1000000)::bigint AS created_at,
       (EXISTS (SELECT 1 FROM dataset_members m WHERE m.sample_id = s.id)
        OR EXISTS (SELECT 1 FROM dataset_members m WHERE m.rejected_sample_id = s.id))
         AS in_dataset,
       {_scores("s.id", "scores")}
FROM samples s
JOIN rounds r ON r.id = s.round_id
JOIN prompts p ON p.id = s.prompt_id
JOIN checkpoints c ON c.id = s.checkpoint_id
WHERE s.round_id = :round_id AND s.purpose = ANY (:purposes)
ORDER BY s.purpose, s.prompt_id, s.sample_index"""

EVALUATIONS_SQL = f"""
SELECT e.id AS evaluation_id, e.eval_set, c.id AS checkpoint_id,
       c.digest AS checkpoint_digest, c.status AS checkpoint_status, c.peer,
       tr.index AS trained_in_round, er.index AS round_index,
       e.primary_metric, e.primary_value, e.metrics::text AS metrics,
       {_PROMPT}, p.text AS prompt, res.passed, res.value,
       CASE WHEN jsonb_typeof(res.details -> 'n') = 'number'
            THEN (res.details ->> 'n')::numeric::int END AS n,
       CASE WHEN jsonb_typeof(res.details -> 'correct') = 'number'
            THEN (res.details ->> 'correct')::numeric::int END AS correct,
       CASE WHEN jsonb_typeof(res.details -> 'sample_ids') = 'array'
            THEN ARRAY(SELECT v::bigint
                       FROM jsonb_array_elements_text(res.details -> 'sample_ids') v) END
         AS sample_ids,
       res.details::text AS details
FROM evaluations e
JOIN checkpoints c ON c.id = e.checkpoint_id
LEFT JOIN rounds tr ON tr.id = c.round_id
LEFT JOIN rounds er ON er.id = e.round_id
JOIN evaluation_results res ON res.evaluation_id = e.id
JOIN prompts p ON p.id = res.prompt_id
WHERE c.run_id = :run_id
ORDER BY e.id, res.prompt_id"""


def stream(
    conn: Connection, sql: str, params: dict[str, Any], batch_rows: int
) -> Iterator[Columns]:
    """The rows of ``sql`` as batches of at most ``batch_rows`` rows, each as columns by
    name, read through a server-side cursor in ``conn``'s transaction."""
    compiled = sa.text(sql).compile(dialect=conn.dialect)
    # psycopg's named cursor directly: one FETCH per batch, plain tuples. SQLAlchemy's
    # streamed result was slower, and its partitions() without a size handed back a text()
    # query's whole result at once.
    raw = conn.connection.driver_connection
    with raw.cursor(name=f"flywheel_export_{next(_cursor_names)}") as cursor:
        cursor.execute(str(compiled), compiled.construct_params(params))
        names = [column.name for column in cursor.description or ()]
        while rows := cursor.fetchmany(batch_rows):
            yield dict(zip(names, zip(*rows, strict=True), strict=True))


def dataset_rows(
    conn: Connection, dataset_id: int, *, preference: bool, batch_rows: int
) -> Iterator[Columns]:
    return stream(conn, dataset_rows_sql(preference), {"dataset_id": dataset_id}, batch_rows)


def round_samples(
    conn: Connection, round_id: int, purposes: Sequence[str], *, batch_rows: int
) -> Iterator[Columns]:
    return stream(conn, SAMPLES_SQL, {"round_id": round_id, "purposes": list(purposes)}, batch_rows)


def run_evaluations(conn: Connection, run_id: int, *, batch_rows: int) -> Iterator[Columns]:
    return stream(conn, EVALUATIONS_SQL, {"run_id": run_id}, batch_rows)


# --------------------------------------------------------------------------- SQL: card facts


def _rows(conn: Connection, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in conn.execute(sa.text(sql), params)]


def _one(conn: Connection, sql: str, missing: str, **params: Any) -> dict[str, Any]:
    found = _rows(conn, sql, **params)
    if not found:
        raise LookupError(missing)
    return found[0]


def run_facts(conn: Connection, run_id: int) -> dict[str, Any]:
    return _one(
        conn,
        "SELECT id, name, status, spec, spec_hash, replay_of_round_id, created_at "
        "FROM runs WHERE id = :run_id",
        f"run {run_id} does not exist; `flywheel runs` lists the runs",
        run_id=run_id,
    )


def round_facts(conn: Connection, run_id: int, index: int) -> dict[str, Any]:
    return _one(
        conn,
        "SELECT id, index, status, seed, manifest, manifest_digest FROM rounds "
        "WHERE run_id = :run_id AND index = :index",
        f"run {run_id} has no round {index}; `flywheel report {run_id}` lists its rounds",
        run_id=run_id,
        index=index,
    )


def round_facts_by_id(conn: Connection, round_id: int) -> dict[str, Any]:
    return _one(
        conn,
        "SELECT id, index, status, seed, manifest, manifest_digest FROM rounds WHERE id = :id",
        f"round {round_id} does not exist",
        id=round_id,
    )


def dataset_facts(conn: Connection, dataset_id: int) -> dict[str, Any]:
    return _one(
        conn,
        "SELECT id, run_id, round_id, name, kind, recipe, recipe_config, digest, object_key, "
        "row_count, stats FROM datasets WHERE id = :id",
        f"dataset {dataset_id} does not exist; `flywheel lineage CHECKPOINT_ID` shows the "
        "datasets each checkpoint trained on",
        id=dataset_id,
    )


def member_count(conn: Connection, dataset_id: int) -> int:
    return conn.execute(
        sa.text("SELECT count(*) FROM dataset_members WHERE dataset_id = :id"), {"id": dataset_id}
    ).scalar_one()


def round_datasets(conn: Connection, round_id: int) -> list[dict[str, Any]]:
    """The datasets selected in the round (name, kind, recipe, stats), by name."""
    return _rows(
        conn,
        "SELECT id, name, kind, recipe, recipe_config, digest, row_count, stats "
        "FROM datasets WHERE round_id = :round_id ORDER BY name",
        round_id=round_id,
    )


def trained_into(conn: Connection, dataset_id: int) -> list[dict[str, Any]]:
    """The checkpoints trained on the dataset, with its share of their training mix."""
    return _rows(
        conn,
        """SELECT c.id, c.digest, c.status, c.peer, r.index AS round_index, cd.share
        FROM checkpoint_datasets cd
        JOIN checkpoints c ON c.id = cd.checkpoint_id
        LEFT JOIN rounds r ON r.id = c.round_id
        WHERE cd.dataset_id = :dataset_id
        ORDER BY c.id""",
        dataset_id=dataset_id,
    )


def evaluation_summaries(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    """Every evaluation of the run's checkpoints: metrics and how many prompt results."""
    return _rows(
        conn,
        """SELECT e.id, e.eval_set, c.id AS checkpoint_id, c.digest, c.status, c.peer,
               tr.index AS trained_in_round, er.index AS round_index, e.primary_metric,
               e.primary_value, e.metrics,
               (SELECT count(*) FROM evaluation_results res
                WHERE res.evaluation_id = e.id) AS results
        FROM evaluations e
        JOIN checkpoints c ON c.id = e.checkpoint_id
        LEFT JOIN rounds tr ON tr.id = c.round_id
        LEFT JOIN rounds er ON er.id = e.round_id
        WHERE c.run_id = :run_id
        ORDER BY e.id""",
        run_id=run_id,
    )


# The sample ids an export covers, as a CTE named ``scope``.
_DATASET_SCOPE = """scope AS (
    SELECT sample_id AS id FROM dataset_members
    WHERE dataset_id = :dataset_id AND sample_id IS NOT NULL
  UNION ALL
    SELECT rejected_sample_id FROM dataset_members
    WHERE dataset_id = :dataset_id AND rejected_sample_id IS NOT NULL
)"""
_ROUND_SCOPE = """scope AS (
    SELECT id FROM samples WHERE round_id = :round_id AND purpose = ANY (:purposes)
)"""
_EVAL_SCOPE = """scope AS (
    SELECT s.id FROM samples s JOIN rounds r ON r.id = s.round_id
    WHERE r.run_id = :run_id AND s.purpose IN ('eval', 'baseline')
)"""

_VERIFIERS = """
SELECT x.verifier, x.verifier_version, count(*) AS verdicts,
       count(*) FILTER (WHERE x.passed) AS passed,
       count(*) FILTER (WHERE x.status = 'unscorable') AS unscorable
FROM scope JOIN scores x ON x.sample_id = scope.id
GROUP BY x.verifier, x.verifier_version
ORDER BY x.verifier, x.verifier_version"""

_CHECKPOINTS = """
SELECT c.id, c.digest, c.status, c.peer, r.index AS trained_in_round, c.source_uri,
       count(*) AS samples
FROM scope
JOIN samples s ON s.id = scope.id
JOIN checkpoints c ON c.id = s.checkpoint_id
LEFT JOIN rounds r ON r.id = c.round_id
GROUP BY c.id, c.digest, c.status, c.peer, r.index, c.source_uri
ORDER BY c.id"""


def _scope(
    dataset_id: int | None, round_id: int | None, purposes: Sequence[str], run_id: int | None
) -> tuple[str, dict[str, Any]]:
    if dataset_id is not None:
        return _DATASET_SCOPE, {"dataset_id": dataset_id}
    if round_id is not None:
        return _ROUND_SCOPE, {"round_id": round_id, "purposes": list(purposes)}
    if run_id is not None:
        return _EVAL_SCOPE, {"run_id": run_id}
    raise ValueError("a scope needs a dataset, a round or a run")


def scope_verifiers(
    conn: Connection,
    *,
    dataset_id: int | None = None,
    round_id: int | None = None,
    purposes: Sequence[str] = PURPOSES,
    run_id: int | None = None,
) -> list[dict[str, Any]]:
    """Verdicts per (verifier, version) on the samples of a dataset, of a round's samples
    of ``purposes``, or of a run's eval and baseline samples."""
    cte, params = _scope(dataset_id, round_id, purposes, run_id)
    return _rows(conn, f"WITH {cte}{_VERIFIERS}", **params)


def scope_checkpoints(
    conn: Connection,
    *,
    dataset_id: int | None = None,
    round_id: int | None = None,
    purposes: Sequence[str] = PURPOSES,
    run_id: int | None = None,
) -> list[dict[str, Any]]:
    """The checkpoints that generated the scope's samples, with how many each generated."""
    cte, params = _scope(dataset_id, round_id, purposes, run_id)
    return _rows(conn, f"WITH {cte}{_CHECKPOINTS}", **params)
