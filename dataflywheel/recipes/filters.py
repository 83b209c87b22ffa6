"""Data filters: composable steps applied to a recipe's rows before they become training data.

Runs in: anywhere (pure). A round's selection is ``recipe → filters[0] → filters[1] → …``
(``selection.filters`` in the run spec, applied by ``tasks/select.py``). Each filter takes
rows (:class:`~dataflywheel.recipes.SftRow` or :class:`~dataflywheel.recipes.PreferencePair`)
and returns the ones it keeps, in order, with what it removed and why; nothing here reads a
reference answer. The filters:

* ``dedup``: exact duplicates (same normalised text), then near duplicates by MinHash
  (Broder 1997; ``datasketch``) over character shingles: a row whose estimated Jaccard
  similarity to an earlier kept row reaches ``threshold`` is dropped (Lee et al. 2022,
  "Deduplicating Training Data Makes Language Models Better"). Rows are compared within a
  prompt (``scope: prompt``: the same answer to different problems is not a duplicate) or
  across the dataset with the prompt included (``scope: dataset``).
* ``decontaminate``: a gate against the run's eval prompts. A row whose prompt or completion
  shares an ``n``-gram with an eval prompt never reaches training (13 word-grams as in GPT-3,
  Brown et al. 2020); an eval prompt shorter than ``n`` counts as one gram, so a short eval
  problem repeated verbatim is caught too. The count is reported (``contaminated``).
* ``length``: completions (both sides of a pair) outside ``[min, max]`` characters or words.
* ``format``: completions that do not match a regular expression, or whose code does not
  parse as Python.

:func:`apply_filters` composes them and records, per filter, rows in, rows out and the yield,
plus the diversity of what is kept (distinct n-grams, Li et al. 2016) — the per-round health
numbers of the report.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dataflywheel.recipes import PreferencePair, PromptId, SelectionResult, SftRow

Row = SftRow | PreferencePair
_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class DedupFilterConfig(BaseModel):
    """Exact and near-duplicate removal (MinHash)."""

    model_config = _FROZEN
    kind: Literal["dedup"] = Field("dedup", description="Filter: dedup.")
    near: bool = Field(True, description="Also drop near duplicates (MinHash); false: exact only.")
    threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Estimated Jaccard similarity at which rows are near duplicates.",
    )
    shingle: int = Field(5, ge=1, le=64, description="Characters per shingle (MinHash features).")
    num_perm: int = Field(64, ge=16, le=512, description="MinHash permutations (precision).")
    scope: Literal["prompt", "dataset"] = Field(
        "prompt",
        description="Compare rows of the same prompt only, or all rows (prompt text included).",
    )


class DecontaminateFilterConfig(BaseModel):
    """Drop rows that share an n-gram with an eval prompt (a gate, counted)."""

    model_config = _FROZEN
    kind: Literal["decontaminate"] = Field("decontaminate", description="Filter: decontaminate.")
    n: int = Field(13, ge=1, le=64, description="Gram length in units (13 words as in GPT-3).")
    unit: Literal["word", "char"] = Field(
        "word", description="Grams of words (letters and digits) or of characters."
    )


class LengthFilterConfig(BaseModel):
    """Keep completions whose length lies in [min, max]."""

    model_config = _FROZEN
    kind: Literal["length"] = Field("length", description="Filter: length.")
    unit: Literal["chars", "words"] = Field("chars", description="Measure characters or words.")
    min: int | None = Field(None, ge=0, description="Shortest completion kept; null: no minimum.")
    max: int | None = Field(None, ge=1, description="Longest completion kept; null: no maximum.")

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("min: set min, max or both (a length filter with neither keeps all)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min: must be ≤ max ({self.min} > {self.max})")
        return self


class FormatFilterConfig(BaseModel):
    """Keep completions in the expected format."""

    model_config = _FROZEN
    kind: Literal["format"] = Field("format", description="Filter: format.")
    pattern: str | None = Field(
        None, description="A regular expression the completion must contain (re.search)."
    )
    python_syntax: bool = Field(
        False,
        description="The completion's code (its last fenced block, or the prompt + completion "
        "when the completion alone does not parse) must parse as Python.",
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.pattern is None and not self.python_syntax:
            raise ValueError("pattern: set pattern, python_syntax: true, or both")
        return self


FilterConfig = Annotated[
    DedupFilterConfig | DecontaminateFilterConfig | LengthFilterConfig | FormatFilterConfig,
    Field(discriminator="kind"),
]
FILTER_KINDS = ("dedup", "decontaminate", "length", "format")


def filters_field() -> Any:
    """The ``filters`` field every recipe config carries (``selection.filters``). An empty
    list is left out of dumps, so specs without filters keep their hashes."""
    return Field(
        default_factory=list,
        exclude_if=lambda value: not value,
        description="Data filters applied after the recipe, in order: dedup, decontaminate, "
        "length, format (recipes/filters.py).",
    )


@dataclass(frozen=True)
class FilterContext:
    """What filters may know besides the rows: each prompt's text and the eval prompts."""

    prompt_texts: Mapping[PromptId, str]
    eval_texts: Sequence[str] = ()

    def prompt(self, prompt_id: PromptId) -> str:
        try:
            return self.prompt_texts[prompt_id]
        except KeyError:
            raise ValueError(f"filters: no text for prompt {prompt_id!r}") from None


@dataclass(frozen=True)
class FilterStep:
    """One filter's account: rows in and out, and why rows were removed."""

    filter: str
    rows_in: int
    rows_out: int
    removed: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        rate = self.rows_out / self.rows_in if self.rows_in else None
        return {
            "filter": self.filter,
            "in": self.rows_in,
            "out": self.rows_out,
            "yield": rate,
            "removed": dict(self.removed),
        }


def _completions(row: Row) -> tuple[str, ...]:
    return (row.chosen_text, row.rejected_text) if isinstance(row, PreferencePair) else (row.text,)


def _normalise(text: str) -> str:
    return " ".join(text.split()).lower()


def _shingles(text: str, k: int) -> set[bytes]:
    text = _normalise(text)
    if len(text) <= k:
        return {text.encode()}
    return {text[i : i + k].encode() for i in range(len(text) - k + 1)}


def dedup(
    rows: Sequence[Row], config: DedupFilterConfig, context: FilterContext
) -> tuple[list[Row], FilterStep]:
    """Drop exact, then near duplicates of earlier kept rows (in row order)."""
    from datasketch import MinHash, MinHashLSH

    kept: list[Row] = []
    removed = {"exact": 0, "near": 0}
    exact: set[str] = set()
    indexes: dict[Any, MinHashLSH] = {}
    signatures: dict[str, MinHash] = {}
    for position, row in enumerate(rows):
        key = row.prompt_id if config.scope == "prompt" else "all"
        text = "\x00".join(_completions(row))
        if config.scope == "dataset":
            text = context.prompt(row.prompt_id) + "\x00" + text
        digest = hashlib.sha256(f"{key!r}\x00{_normalise(text)}".encode()).hexdigest()
        if digest in exact:
            removed["exact"] += 1
            continue
        if config.near:
            # seed=1 and the default hash: the same text always gives the same signature.
            signature = MinHash(num_perm=config.num_perm, seed=1)
            signature.update_batch(sorted(_shingles(text, config.shingle)))
            index = indexes.setdefault(
                key, MinHashLSH(threshold=config.threshold, num_perm=config.num_perm)
            )
            # LSH proposes candidates; the estimated Jaccard decides, so the cut is exact.
            if any(
                signature.jaccard(signatures[k]) >= config.threshold for k in index.query(signature)
            ):
                removed["near"] += 1
                continue
            index.insert(str(position), signature)
            signatures[str(position)] = signature
        exact.add(digest)
        kept.append(row)
    return kept, FilterStep("dedup", len(rows), len(kept), removed)


def _units(text: str, unit: str) -> list[str]:
    return _WORD.findall(text.lower()) if unit == "word" else list(_normalise(text))


def _grams(units: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(units[i : i + n]) for i in range(len(units) - n + 1)}


def decontaminate(
    rows: Sequence[Row], config: DecontaminateFilterConfig, context: FilterContext
) -> tuple[list[Row], FilterStep]:
    """Drop rows whose prompt or completion shares an n-gram with an eval prompt."""
    index: set[tuple[str, ...]] = set()
    lengths = {config.n}
    for text in context.eval_texts:
        units = _units(text, config.unit)
        if 0 < len(units) < config.n:
            index.add(tuple(units))  # a short eval prompt is one gram of its own length
            lengths.add(len(units))
        else:
            index |= _grams(units, config.n)
    kept: list[Row] = []
    removed = {"contaminated": 0}
    for row in rows:
        texts = (context.prompt(row.prompt_id), *_completions(row))
        units = [_units(text, config.unit) for text in texts]
        if any(_grams(u, n) & index for u in units for n in lengths):
            removed["contaminated"] += 1
            continue
        kept.append(row)
    return kept, FilterStep("decontaminate", len(rows), len(kept), removed)


def length(
    rows: Sequence[Row], config: LengthFilterConfig, context: FilterContext
) -> tuple[list[Row], FilterStep]:
    """Keep rows whose completions (all of them) lie within the length bounds."""
    del context
    kept: list[Row] = []
    removed = {"too_short": 0, "too_long": 0}
    for row in rows:
        sizes = [
            len(t) if config.unit == "chars" else len(_TOKEN.findall(t)) for t in _completions(row)
        ]
        if config.min is not None and min(sizes) < config.min:
            removed["too_short"] += 1
        elif config.max is not None and max(sizes) > config.max:
            removed["too_long"] += 1
        else:
            kept.append(row)
    return kept, FilterStep("length", len(rows), len(kept), removed)


def _parses(code: str) -> bool:
    # compile, not ast.parse: only the compiler rejects e.g. `return` outside a function.
    # Nothing is executed.
    try:
        compile(code, "<completion>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _python_ok(completion: str, prompt: str) -> bool:
    blocks = _FENCE.findall(completion)
    code = blocks[-1] if blocks else completion
    return _parses(code) or _parses(prompt + code)


def format_(
    rows: Sequence[Row], config: FormatFilterConfig, context: FilterContext
) -> tuple[list[Row], FilterStep]:
    """Keep rows whose completions match the pattern and (optionally) parse as Python."""
    pattern = re.compile(config.pattern) if config.pattern is not None else None
    kept: list[Row] = []
    removed = {"no_match": 0, "syntax": 0}
    for row in rows:
        texts = _completions(row)
        if pattern is not None and not all(pattern.search(t) for t in texts):
            removed["no_match"] += 1
        elif config.python_syntax and not all(
            _python_ok(t, context.prompt(row.prompt_id)) for t in texts
        ):
            removed["syntax"] += 1
        else:
            kept.append(row)
    return kept, FilterStep("format", len(rows), len(kept), removed)


FILTERS = {"dedup": dedup, "decontaminate": decontaminate, "length": length, "format": format_}


def diversity(rows: Sequence[Row]) -> dict[str, Any]:
    """Distinct-n of the kept completions (chosen side of pairs): distinct n-grams over all
    n-grams, for words and punctuation as tokens; ``None`` when there is no n-gram."""
    texts = [row.chosen_text if isinstance(row, PreferencePair) else row.text for row in rows]
    out: dict[str, Any] = {"rows": len(texts), "unique_texts": len(set(texts))}
    for n in (1, 2):
        grams = [
            tuple(tokens[i : i + n])
            for tokens in (_TOKEN.findall(t) for t in texts)
            for i in range(len(tokens) - n + 1)
        ]
        out[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else None
    return out


def apply_filters(
    result: SelectionResult, filters: Sequence[BaseModel], context: FilterContext
) -> SelectionResult:
    """The recipe's result after every filter, in order; the stats gain ``filters`` (one
    account per filter), ``contaminated``, ``recipe_kept`` and ``diversity``."""
    rows: list[Row] = list(result.rows)
    steps = []
    for config in filters:
        kind = getattr(config, "kind", None)
        if kind not in FILTERS:
            raise ValueError(f"unknown filter {kind!r}; allowed: {', '.join(FILTER_KINDS)}")
        rows, step = FILTERS[kind](rows, config, context)
        steps.append(step.as_dict())
    stats = result.stats
    details = {
        **stats.details,
        "recipe_kept": stats.kept,
        "filters": steps,
        "contaminated": sum(s["removed"].get("contaminated", 0) for s in steps),
        "diversity": diversity(rows),
    }
    new_stats = replace(stats, kept=len(rows), details=details)
    return SelectionResult(tuple(rows), new_stats)  # type: ignore[arg-type]
