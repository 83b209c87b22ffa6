"""The lineage SQL: the statements :mod:`dataflywheel.db.lineage` runs, by name.

Runs in: anywhere (constants only). Written with ``:name`` parameters that both SQLAlchemy and
psql understand; ``docs/lineage.md`` prints each statement of :data:`RECIPES` verbatim as a
psql recipe (a test keeps them identical). Ancestry walks ``checkpoints.parent_id`` upwards
with a recursive CTE and aggregates the training data in SQL, so its cost grows with the
lineage, not with the size of the database. ``CYCLE`` clauses guard the recursive walks
against a corrupted ``parent_id`` loop.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- SQL: ancestry

_CHAIN = """\
WITH RECURSIVE chain (id, parent_id, depth) AS (
    SELECT id, parent_id, 0
    FROM checkpoints
    WHERE id = :checkpoint_id
  UNION ALL
    SELECT c.id, c.parent_id, chain.depth + 1
    FROM checkpoints c
    JOIN chain ON c.id = chain.parent_id
) CYCLE id SET is_cycle USING path"""

# The sample ids of each training dataset of the lineage, per role: ``chosen`` (the kept sample
# of an sft row, the chosen side of a pair) and ``rejected``. A replay dataset shared by several
# ancestors appears once. The ids travel as arrays because ``= ANY (array)`` lets one B-tree
# scan per dataset walk the sorted ids, skipping redundant descents (PostgreSQL 17+), where a
# join probes the index once per row: 3-4x faster at 60k training rows.
_MEMBER_IDS = """,
training_datasets AS (
    SELECT DISTINCT cd.dataset_id
    FROM chain
    JOIN checkpoint_datasets cd ON cd.checkpoint_id = chain.id
    WHERE NOT chain.is_cycle
),
member_ids (dataset_id, role, sample_ids) AS (
    SELECT t.dataset_id, 'chosen', ARRAY(
        SELECT dm.sample_id FROM dataset_members dm
        WHERE dm.dataset_id = t.dataset_id AND dm.sample_id IS NOT NULL)
    FROM training_datasets t
  UNION ALL
    SELECT t.dataset_id, 'rejected', ARRAY(
        SELECT dm.rejected_sample_id FROM dataset_members dm
        WHERE dm.dataset_id = t.dataset_id AND dm.rejected_sample_id IS NOT NULL)
    FROM training_datasets t
)"""

ANCESTRY_CHECKPOINTS_SQL = (
    _CHAIN
    + """
SELECT c.id, chain.depth, c.parent_id, c.run_id, c.round_id, r.index AS round_index,
       c.status, c.source_uri, c.digest, c.created_at
FROM chain
JOIN checkpoints c ON c.id = chain.id
LEFT JOIN rounds r ON r.id = c.round_id
WHERE NOT chain.is_cycle
ORDER BY chain.depth"""
)

ANCESTRY_DATASETS_SQL = (
    _CHAIN
    + """
SELECT cd.checkpoint_id, d.id AS dataset_id, d.name, d.kind, d.run_id, d.round_id,
       r.index AS round_index, cd.share, d.row_count
FROM chain
JOIN checkpoint_datasets cd ON cd.checkpoint_id = chain.id
JOIN datasets d ON d.id = cd.dataset_id
LEFT JOIN rounds r ON r.id = d.round_id
WHERE NOT chain.is_cycle
ORDER BY chain.depth, d.id"""
)

ANCESTRY_SAMPLE_SOURCES_SQL = (
    _CHAIN
    + _MEMBER_IDS
    + """
SELECT m.dataset_id, m.role, r.run_id, s.round_id, r.index AS round_index,
       s.checkpoint_id AS generated_by, s.samples
FROM member_ids m
CROSS JOIN LATERAL (
    SELECT round_id, checkpoint_id, count(*) AS samples
    FROM samples
    WHERE id = ANY (m.sample_ids)
    GROUP BY round_id, checkpoint_id
) s
JOIN rounds r ON r.id = s.round_id
ORDER BY m.dataset_id, m.role, r.run_id, r.index, s.checkpoint_id"""
)

ANCESTRY_VERDICTS_SQL = (
    _CHAIN
    + _MEMBER_IDS
    + """
SELECT m.dataset_id, m.role, v.verifier, v.verifier_version,
       v.scored, v.passed, v.failed, v.unscorable
FROM member_ids m
CROSS JOIN LATERAL (
    SELECT verifier, verifier_version,
           count(*) AS scored,
           count(*) FILTER (WHERE passed) AS passed,
           count(*) FILTER (WHERE NOT passed) AS failed,
           count(*) FILTER (WHERE status = 'unscorable') AS unscorable
    FROM scores
    WHERE sample_id = ANY (m.sample_ids)
    GROUP BY verifier, verifier_version
) v
ORDER BY m.dataset_id, m.role, v.verifier, v.verifier_version"""
)

# Keyset paging on sample id: a page is one pass over the lineage's member ids.
TRAINING_SAMPLE_IDS_SQL = (
    _CHAIN
    + _MEMBER_IDS
    + """
SELECT DISTINCT ids.sample_id
FROM member_ids m
CROSS JOIN LATERAL unnest(m.sample_ids) AS ids (sample_id)
WHERE ids.sample_id > :after_sample_id
ORDER BY ids.sample_id
LIMIT :page_size"""
)

# --------------------------------------------------------------------------- SQL: descendants

_PROMPT_SEED = """\
seed_samples AS (
    SELECT id FROM samples WHERE prompt_id = :prompt_id
)"""

_SAMPLE_SEED = """\
seed_samples AS (
    SELECT id FROM samples WHERE id = :sample_id
)"""

# Dataset rows that hold a seed sample (kept, chosen or rejected); for a prompt also the rows
# that name the prompt itself (eval sets, pseudo-labelled rows).
_PROMPT_MEMBERS = """,
seed_members AS (
    SELECT dm.id, dm.dataset_id
    FROM dataset_members dm
    WHERE dm.prompt_id = :prompt_id
  UNION
    SELECT dm.id, dm.dataset_id
    FROM seed_samples s
    JOIN dataset_members dm ON s.id IN (dm.sample_id, dm.rejected_sample_id)
)"""

_SAMPLE_MEMBERS = """,
seed_members AS (
    SELECT dm.id, dm.dataset_id
    FROM seed_samples s
    JOIN dataset_members dm ON s.id IN (dm.sample_id, dm.rejected_sample_id)
)"""

_SAMPLES_TAIL = """
SELECT s.id AS sample_id, s.round_id, s.purpose, s.prompt_id, s.sample_index,
       s.checkpoint_id AS generated_by,
       sc.id AS score_id, sc.verifier, sc.verifier_version, sc.passed, sc.value, sc.status
FROM seed_samples ss
JOIN samples s ON s.id = ss.id
LEFT JOIN scores sc ON sc.sample_id = s.id
ORDER BY s.id, sc.id"""

_DATASETS_TAIL = """
SELECT d.id AS dataset_id, d.name, d.kind, d.run_id, d.round_id, count(*) AS members
FROM seed_members m
JOIN datasets d ON d.id = m.dataset_id
GROUP BY d.id
ORDER BY d.id"""

# depth 0: trained on one of the datasets; depth n: n generations below such a checkpoint.
_CHECKPOINTS_TAIL = """,
descendants (id, depth) AS (
    SELECT cd.checkpoint_id, 0
    FROM checkpoint_datasets cd
    WHERE cd.dataset_id IN (SELECT dataset_id FROM seed_members)
  UNION ALL
    SELECT c.id, d.depth + 1
    FROM descendants d
    JOIN checkpoints c ON c.parent_id = d.id
) CYCLE id SET is_cycle USING path
SELECT c.id AS checkpoint_id, min(d.depth) AS depth, c.parent_id, c.run_id, c.round_id,
       c.status, e.id AS evaluation_id, e.eval_set, e.primary_metric, e.primary_value
FROM descendants d
JOIN checkpoints c ON c.id = d.id
LEFT JOIN evaluations e ON e.checkpoint_id = c.id
WHERE NOT d.is_cycle
GROUP BY c.id, e.id
ORDER BY c.id, e.id"""

PROMPT_SAMPLES_SQL = "WITH " + _PROMPT_SEED + _SAMPLES_TAIL
PROMPT_DATASETS_SQL = "WITH " + _PROMPT_SEED + _PROMPT_MEMBERS + _DATASETS_TAIL
PROMPT_CHECKPOINTS_SQL = "WITH RECURSIVE " + _PROMPT_SEED + _PROMPT_MEMBERS + _CHECKPOINTS_TAIL
SAMPLE_SAMPLES_SQL = "WITH " + _SAMPLE_SEED + _SAMPLES_TAIL
SAMPLE_DATASETS_SQL = "WITH " + _SAMPLE_SEED + _SAMPLE_MEMBERS + _DATASETS_TAIL
SAMPLE_CHECKPOINTS_SQL = "WITH RECURSIVE " + _SAMPLE_SEED + _SAMPLE_MEMBERS + _CHECKPOINTS_TAIL

RECIPES: dict[str, str] = {
    "ANCESTRY_CHECKPOINTS_SQL": ANCESTRY_CHECKPOINTS_SQL,
    "ANCESTRY_DATASETS_SQL": ANCESTRY_DATASETS_SQL,
    "ANCESTRY_SAMPLE_SOURCES_SQL": ANCESTRY_SAMPLE_SOURCES_SQL,
    "ANCESTRY_VERDICTS_SQL": ANCESTRY_VERDICTS_SQL,
    "TRAINING_SAMPLE_IDS_SQL": TRAINING_SAMPLE_IDS_SQL,
    "PROMPT_SAMPLES_SQL": PROMPT_SAMPLES_SQL,
    "PROMPT_DATASETS_SQL": PROMPT_DATASETS_SQL,
    "PROMPT_CHECKPOINTS_SQL": PROMPT_CHECKPOINTS_SQL,
    "SAMPLE_SAMPLES_SQL": SAMPLE_SAMPLES_SQL,
    "SAMPLE_DATASETS_SQL": SAMPLE_DATASETS_SQL,
    "SAMPLE_CHECKPOINTS_SQL": SAMPLE_CHECKPOINTS_SQL,
}
"""Every statement :mod:`dataflywheel.db.lineage` runs, by name: docs/lineage.md prints each
one verbatim."""
