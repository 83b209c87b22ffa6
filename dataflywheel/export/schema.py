"""The Arrow schemas of the exports, and turning columns read from PostgreSQL into batches.

Runs in: anywhere (pure). Three exports, one schema each (two for datasets: sft rows carry a
``completion``, preference rows ``chosen`` and ``rejected``):

* a **dataset**: its rows as trained (the text columns are the dataset file's) beside the
  lineage of each row: the prompt, the sample it came from and that sample's scores;
* a round's **samples**: one row per sample, with its prompt and every score;
* a run's **evaluations**: one row per (evaluation, prompt) result.

Scores are one ``list<struct>`` column (``scores``) rather than a column per verifier: the
schema stays the same whatever verifiers a run used, and several versions of one verifier (a
``flywheel rescore``) sit side by side. JSONB columns (``reference``, ``sampling_params``,
``metrics``, score ``details``) are JSON text: their keys vary by prompt set and backend. Each
field's description rides in its Arrow metadata, so the Parquet file documents itself and the
dataset card's column table is generated from it.

The database side names its result columns after the fields here; a score list travels as
one JSON array per row, which :func:`record_batch` hands to Arrow's JSON reader (C++), so no
Python object is made per score.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json

from dataflywheel.export import ExportError

DESCRIPTION = b"description"

# --------------------------------------------------------------------------- fields


def _field(name: str, type_: pa.DataType, description: str, *, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={DESCRIPTION: description.encode()})


SCORE = pa.struct(
    [
        _field("verifier", pa.string(), "Verifier name, e.g. exact_answer.", nullable=False),
        _field("verifier_version", pa.string(), "Hash of the verifier's code and configuration."),
        _field("value", pa.float64(), "The score; null when unscorable."),
        _field("passed", pa.bool_(), "The verdict; null when unscorable."),
        _field("status", pa.string(), "scored | unscorable."),
        _field("reason", pa.string(), "e.g. no_answer, mismatch."),
        _field("details", pa.string(), "The verifier's details (JSON)."),
    ]
)
SCORES = pa.list_(SCORE)
_SCORES_DOC = pa.schema([pa.field("s", SCORES)])  # one JSON line per row: {"s": [...]}
TIMESTAMP = pa.timestamp("us", tz="UTC")


def _prompt_fields() -> list[pa.Field]:
    return [
        _field("prompt_id", pa.int64(), "prompts.id of the prompt."),
        _field("prompt_set", pa.string(), "The prompt set, e.g. addition or humaneval."),
        _field("prompt_split", pa.string(), "The prompt's split: train, eval, test, ..."),
        _field("reference", pa.string(), "The reference answer or solution (JSON); null if none."),
        _field("difficulty", pa.int32(), "The prompt's difficulty level; null if none."),
    ]


def _generation_fields() -> list[pa.Field]:
    return [
        _field("checkpoint_id", pa.int64(), "The checkpoint that generated the sample."),
        _field("checkpoint_digest", pa.string(), "sha256 of that checkpoint's weights manifest."),
        _field("peer", pa.int16(), "0: the run's model; 1+: a peer model that only votes."),
        _field("sample_index", pa.int32(), "The sample's index among its prompt's samples."),
        _field("seed", pa.int64(), "The sampling seed."),
        _field(
            "sampling_params", pa.string(), "temperature, top_p, max_tokens, backend... (JSON)."
        ),
    ]


def _schema(fields: list[pa.Field], kind: str) -> pa.Schema:
    return pa.schema(fields, metadata={b"dataflywheel.export": kind.encode()})


def _dataset_fields(texts: list[pa.Field], rejected: list[pa.Field]) -> list[pa.Field]:
    return [
        _field("position", pa.int32(), "Row number in the dataset file.", nullable=False),
        _field("prompt", pa.string(), "The prompt as trained (the dataset file's text)."),
        *texts,
        _field("label", pa.string(), "The pseudo-label trained on, e.g. a majority-vote answer."),
        *_prompt_fields(),
        _field("sample_id", pa.int64(), "The kept (sft) or chosen (preference) sample."),
        _field("round_index", pa.int32(), "The round that generated the sample."),
        *_generation_fields(),
        _field("finish_reason", pa.string(), "Why generation stopped: stop, length, ..."),
        _field("completion_tokens", pa.int32(), "Tokens in the sample's completion."),
        _field("scores", SCORES, "Every verifier's verdict on the sample."),
        *rejected,
    ]


SFT_DATASET = _schema(
    _dataset_fields(
        [_field("completion", pa.string(), "The completion as trained (the dataset file's text).")],
        [],
    ),
    "dataset",
)
PREFERENCE_DATASET = _schema(
    _dataset_fields(
        [
            _field("chosen", pa.string(), "The preferred completion (the dataset file's text)."),
            _field("rejected", pa.string(), "The rejected completion (the dataset file's text)."),
        ],
        [
            _field("rejected_sample_id", pa.int64(), "The rejected sample of the pair."),
            _field("rejected_scores", SCORES, "Every verifier's verdict on the rejected sample."),
        ],
    ),
    "dataset",
)

SAMPLES = _schema(
    [
        _field("sample_id", pa.int64(), "samples.id.", nullable=False),
        _field("run_id", pa.int64(), "The run."),
        _field("round_index", pa.int32(), "The round that generated the sample."),
        _field("purpose", pa.string(), "train (for selection) | eval | baseline."),
        *_prompt_fields(),
        _field("prompt", pa.string(), "The prompt text."),
        *_generation_fields(),
        _field("completion", pa.string(), "The generated text."),
        _field("prompt_tokens", pa.int32(), "Tokens in the prompt."),
        _field("completion_tokens", pa.int32(), "Tokens in the completion."),
        _field("finish_reason", pa.string(), "Why generation stopped: stop, length, ..."),
        _field("created_at", TIMESTAMP, "When the sample was stored."),
        _field(
            "in_dataset", pa.bool_(), "The sample is a row (kept, chosen or rejected) of a dataset."
        ),
        _field("scores", SCORES, "Every verifier's verdict on the sample."),
    ],
    "samples",
)

EVALUATIONS = _schema(
    [
        _field("evaluation_id", pa.int64(), "evaluations.id.", nullable=False),
        _field("eval_set", pa.string(), "The held-out set's name."),
        _field("checkpoint_id", pa.int64(), "The evaluated checkpoint."),
        _field("checkpoint_digest", pa.string(), "sha256 of its weights manifest."),
        _field("checkpoint_status", pa.string(), "base | candidate | promoted | rejected."),
        _field("peer", pa.int16(), "0: the run's model; 1+: a peer model."),
        _field("trained_in_round", pa.int32(), "The round that trained it; null: the base model."),
        _field("round_index", pa.int32(), "The round whose evaluation this is."),
        _field("primary_metric", pa.string(), "The metric the promotion gate compares."),
        _field("primary_value", pa.float64(), "Its value for this checkpoint."),
        _field("metrics", pa.string(), "Every metric of the evaluation (JSON)."),
        *_prompt_fields(),
        _field("prompt", pa.string(), "The prompt text."),
        _field("passed", pa.bool_(), "Some sample of the prompt passed."),
        _field("value", pa.float64(), "Share of the prompt's samples that passed."),
        _field("n", pa.int32(), "Samples drawn for the prompt."),
        _field("correct", pa.int32(), "Samples that passed."),
        _field("sample_ids", pa.list_(pa.int64()), "The samples behind the result."),
        _field("details", pa.string(), "The result's details as stored (JSON)."),
    ],
    "evaluations",
)


def dataset_schema(kind: str) -> pa.Schema:
    """The schema of a dataset of ``kind`` (sft, preference or eval)."""
    return PREFERENCE_DATASET if kind == "preference" else SFT_DATASET


def text_columns(kind: str) -> tuple[str, ...]:
    """The columns a dataset file of ``kind`` holds, besides ``prompt``."""
    return ("chosen", "rejected") if kind == "preference" else ("completion",)


def with_lineage(schema: pa.Schema, lineage: Mapping[str, str]) -> pa.Schema:
    """``schema`` with ``dataflywheel.<key>`` metadata: the file names where it came from."""
    extra = {f"dataflywheel.{k}".encode(): str(v).encode() for k, v in lineage.items()}
    return schema.with_metadata({**(schema.metadata or {}), **extra})


def describe(schema: pa.Schema) -> list[tuple[str, str, str]]:
    """(name, type, description) of each column, for the dataset card."""
    return [
        (f.name, str(f.type), (f.metadata or {}).get(DESCRIPTION, b"").decode()) for f in schema
    ]


# --------------------------------------------------------------------------- batches


def scores_array(values: Sequence[str | None]) -> pa.Array:
    """The list<struct> column from one JSON array (text) per row; None is an empty list.
    Parsed by Arrow's JSON reader in one call per batch, against :data:`SCORES` exactly."""
    if not values:
        return pa.array([], SCORES)
    lines = "\n".join(f'{{"s":{v or "[]"}}}' for v in values).encode()
    try:
        table = pa_json.read_json(
            io.BytesIO(lines),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=len(lines) + 1),
            parse_options=pa_json.ParseOptions(
                explicit_schema=_SCORES_DOC, unexpected_field_behavior="error"
            ),
        )
    except pa.ArrowInvalid as exc:
        raise ExportError(
            f"scores that do not fit the export's score type ({exc}); a score value must be a "
            "finite number: JSON has no NaN or infinity"
        ) from None
    return table.column("s").combine_chunks().cast(SCORES)


def record_batch(schema: pa.Schema, columns: Mapping[str, Sequence[Any]]) -> pa.RecordBatch:
    """A batch of ``schema`` from columns by name; a column absent from ``columns`` is null
    (an empty list for score lists). Timestamps come as microseconds since the epoch, score
    lists as JSON text (:func:`scores_array`)."""
    rows = len(next(iter(columns.values()))) if columns else 0
    arrays = []
    for field in schema:
        values = columns.get(field.name)
        if field.type == SCORES:
            arrays.append(scores_array(values if values is not None else [None] * rows))
        elif values is None:
            arrays.append(pa.nulls(rows, field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
