"""Human-readable forms of a run report: a rich table for the terminal and a Markdown file.

Runs in: anywhere (pure apart from ``write_markdown``, which writes the one file it is given).
Both views come from the same row builder, :func:`table_rows`, so the terminal and the
Markdown show identical numbers.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dataflywheel.reporting.summaries import STAGES, RoundReport, RunReport, VerifierStats

DASH = "–"
COLUMNS = (
    "round",
    "status",
    "prompts",
    "samples",
    "pass rate",
    "kept (yield)",
    "loss",
    "{metric}",
    "Δ",
    "promoted",
    "time",
)
_NUMERIC = {"prompts", "samples", "kept (yield)", "loss", "{metric}", "Δ", "time"}


# --------------------------------------------------------------------------- formatting


def fmt_pct(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.1f}%"


def fmt_value(value: float | None, digits: int = 3) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def fmt_delta(value: float | None) -> str:
    # A true minus sign: "−0.100" does not read as a dash in a table of numbers.
    if value is None:
        return DASH
    return f"+{value:.3f}" if value >= 0 else f"−{-value:.3f}"


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return DASH
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _verifier_cell(v: VerifierStats, show_version: bool) -> str:
    name = f"{v.name}@{v.version[:8]}" if show_version else v.name
    extra = f" ({v.unscorable} unscorable)" if v.unscorable else ""
    return f"{name} {fmt_pct(v.pass_rate)}{extra}"


def _scorer(name: str, version: str, versions: list[str]) -> str:
    """A scorer's name, with its version when the round has several versions of it."""
    return f"{name}@{version[:8]}" if len(set(versions)) > 1 else name


def _pass_rates(r: RoundReport) -> list[str]:
    names = [v.name for v in r.verifiers]
    return [_verifier_cell(v, names.count(v.name) > 1) for v in r.verifiers]


def _promotion(r: RoundReport) -> str:
    if r.training is None:
        return r.promotion or DASH
    mark = {"promoted": "✓", "rejected": "✗"}.get(r.training.status, "")
    return f"{mark} #{r.training.checkpoint_id} {r.training.status}".strip()


def _round_label(r: RoundReport) -> str:
    return f"{r.index} (warm-up)" if r.warmup else str(r.index)


def _band(r: RoundReport) -> str:
    c = r.curriculum or {}
    low, high = c.get("min_difficulty"), c.get("max_difficulty")
    return DASH if low is None else f"{low}" if low == high else f"{low}-{high}"


def _levels_cell(r: RoundReport) -> str:
    """Accuracy per difficulty level under the primary value (a curriculum's gate reads
    them), with the round's band when it has a curriculum decision."""
    levels = r.level_accuracy
    if not levels:
        return ""
    band = f"\nband {_band(r)}" if (r.curriculum or {}).get("decision") else ""
    return band + "".join(f"\nL{level} {fmt_value(acc)}" for level, acc in levels.items())


def table_rows(report: RunReport) -> list[list[str | list[str]]]:
    """One row per round (after a ``base`` row when the base model was evaluated); the pass
    rate cell is a list, one entry per verifier, for each view to join its own way."""
    rows: list[list[str | list[str]]] = []
    if report.baseline is not None:
        b = report.baseline
        rows.append(
            [
                "base",
                DASH,
                DASH,
                DASH,
                [],
                DASH,
                DASH,
                fmt_value(b.primary),
                DASH,
                f"#{b.checkpoint_id} base",
                DASH,
            ]
        )
    for r in report.rounds:
        kept = DASH if not r.datasets else str(r.kept)
        if r.datasets and r.yield_ is not None:
            kept += f" ({fmt_pct(r.yield_)})"
        if r.label_accuracy is not None:  # audit: how many pseudo-labels were right
            kept += f"\nlabels {fmt_pct(r.label_accuracy)} right"
        kept += "".join(f"\n{s['filter']} {fmt_pct(s['yield'])}" for s in r.filters)
        if r.diversity and r.diversity.get("distinct_2") is not None:
            kept += f"\ndistinct-2 {r.diversity['distinct_2']:.2f}"
        rows.append(
            [
                _round_label(r),
                r.status,
                str(r.prompts),
                str(r.samples),
                _pass_rates(r),
                kept,
                fmt_value(r.training.final_loss if r.training else None),
                fmt_value(r.eval.primary if r.eval else None) + _levels_cell(r),
                fmt_delta(r.eval.delta if r.eval else None),
                _promotion(r),
                fmt_seconds(r.seconds),
            ]
        )
    return rows


def _headers(report: RunReport) -> list[str]:
    return [c.format(metric=report.primary_metric) for c in COLUMNS]


# --------------------------------------------------------------------------- terminal


def render_table(report: RunReport) -> Table:
    """The per-round table for the terminal."""
    table = Table(
        title=f"run {report.id} · {escape(report.name)} · {report.status}",
        caption=_headline(report),
        header_style="bold",
    )
    for column, header in zip(COLUMNS, _headers(report), strict=True):
        justify = "right" if column in _NUMERIC else "left"
        table.add_column(escape(header), justify=justify, overflow="fold")
    for row in table_rows(report):
        cells: list[str | Text] = []
        for column, cell in zip(COLUMNS, row, strict=True):
            text = "\n".join(cell) if isinstance(cell, list) else cell
            style = ""
            if column == "Δ" and text != DASH:
                style = "red" if text.startswith("−") else "green"
            elif column == "promoted":
                style = "green" if "✓" in text else "red" if "✗" in text else ""
            cells.append(Text(text or DASH, style=style))
        table.add_row(*cells)
    return table


def _headline(report: RunReport) -> str:
    s = report.summary()
    if s["promoted_checkpoint_id"] is None:
        return "no checkpoint promoted yet"
    gain = s["gain_over_baseline"]
    versus = f" ({fmt_delta(gain)} over the base model)" if gain is not None else ""
    return (
        f"current model: checkpoint #{s['promoted_checkpoint_id']}, "
        f"{report.primary_metric} {fmt_value(s['promoted_primary'])}{versus}"
    )


# --------------------------------------------------------------------------- Markdown


def _md(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", "<br>")


def _md_table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(_md(h) for h in headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_md(c) or DASH for c in row) + " |" for row in rows]
    return lines


def markdown(report: RunReport, plot: str | None = None) -> str:
    """The report as Markdown: headline, per-round table, verifiers and stage durations."""
    lines = [f"# Run {report.id}: {report.name}", ""]
    planned = report.rounds_planned
    rounds = f"rounds: {len(report.rounds)} recorded" + (
        f", {'warm-up + ' if report.warmup else ''}{planned} planned" if planned else ""
    )
    lines += [
        f"- status: **{report.status}**; {rounds}",
        f"- primary metric: `{report.primary_metric}`",
    ]
    if report.baseline is not None:
        b = report.baseline
        lines.append(
            f"- base model (checkpoint #{b.checkpoint_id}, eval set `{b.eval_set}`): "
            f"{b.metric} {fmt_value(b.primary)}"
        )
    lines += [f"- {_headline(report)}", ""]
    if plot:
        lines += [f"![{report.primary_metric} and yield per round]({plot})", ""]

    lines += ["## Rounds", ""]
    right = {i for i, c in enumerate(COLUMNS) if c in _NUMERIC}
    rows = [
        ["<br>".join(c) if isinstance(c, list) else c for c in row] for row in table_rows(report)
    ]
    lines += _md_table(_headers(report), rows, right) + [""]
    lines += [
        "Pass rates are over the round's train samples with unscorable verdicts excluded; "
        "yield is kept rows / samples seen by selection; Δ is against the parent checkpoint.",
        "",
    ]

    lines += _curriculum_lines(report)

    verifier_rows = [
        [
            _round_label(r),
            v.name,
            v.version,
            str(v.passed),
            str(v.failed),
            str(v.unscorable),
            fmt_pct(v.pass_rate),
        ]
        for r in report.rounds
        for v in r.verifiers
    ]
    if verifier_rows:
        lines += ["## Verifiers", ""]
        headers = ["round", "verifier", "version", "passed", "failed", "unscorable", "pass rate"]
        lines += _md_table(headers, verifier_rows, {3, 4, 5, 6}) + [""]

    health_rows = [
        [
            _round_label(r),
            s["filter"],
            str(s["in"]),
            str(s["out"]),
            fmt_pct(s["yield"]),
            ", ".join(f"{k} {v}" for k, v in s["removed"].items() if v) or DASH,
        ]
        for r in report.rounds
        for s in r.filters
    ]
    diverse = [r for r in report.rounds if r.diversity]
    agreement_rows = [
        [
            _round_label(r),
            _scorer(
                a.judge,
                a.judge_version,
                [b.judge_version for b in r.agreement if b.judge == a.judge],
            ),
            _scorer(
                a.verifier,
                a.verifier_version,
                [b.verifier_version for b in r.agreement if b.verifier == a.verifier],
            ),
            str(a.compared),
            str(a.agree),
            fmt_pct(a.rate),
            fmt_value(a.kappa, 2),
            str(a.judge_only),
            str(a.verifier_only),
            str(a.unscorable),
        ]
        for r in report.rounds
        for a in r.agreement
    ]
    if health_rows or diverse or agreement_rows:
        lines += ["## Data health", ""]
    if health_rows:
        headers = ["round", "filter", "in", "out", "yield", "removed"]
        lines += _md_table(headers, health_rows, {2, 3, 4}) + [""]
    if diverse:
        div_rows = [
            [
                _round_label(r),
                str(r.diversity["rows"]),
                str(r.diversity["unique_texts"]),
                fmt_value(r.diversity.get("distinct_1")),
                fmt_value(r.diversity.get("distinct_2")),
            ]
            for r in diverse
            if r.diversity is not None
        ]
        headers = ["round", "kept rows", "unique texts", "distinct-1", "distinct-2"]
        lines += _md_table(headers, div_rows, {1, 2, 3, 4}) + [""]
    if agreement_rows:
        lines += [
            "Judge vs verifier: a model-based scorer's verdicts against a rule verifier's on "
            "the same train samples (unscorable on either side: not compared; κ: Cohen's "
            "kappa, agreement beyond chance).",
            "",
        ]
        headers = ["round", "judge", "verifier", "compared", "agree", "agreement", "κ",
                   "judge only passed", "verifier only passed", "unscorable"]  # fmt: skip
        lines += _md_table(headers, agreement_rows, set(range(3, 10))) + [""]

    stages = list(STAGES) + sorted(
        {k for r in report.rounds for k in r.stage_seconds} - set(STAGES)
    )
    timed = [r for r in report.rounds if r.stage_seconds]
    if timed:
        lines += ["## Stage durations", ""]
        stage_rows = [
            [_round_label(r)]
            + [fmt_seconds(r.stage_seconds.get(s)) for s in stages]
            + [fmt_seconds(r.seconds)]
            for r in timed
        ]
        headers = ["round", *stages, "round total"]
        lines += _md_table(headers, stage_rows, set(range(1, len(headers)))) + [""]
    return "\n".join(lines)


def _curriculum_lines(report: RunReport) -> list[str]:
    """A table of the band each round sampled, the gate's decision, and the round
    checkpoint's held-out accuracy per level (empty when no round has either)."""
    shown = [r for r in report.rounds if r.level_accuracy or (r.curriculum or {}).get("decision")]
    if not shown:
        return []
    levels = sorted({lv for r in shown for lv in r.level_accuracy or {}}, key=int)
    rows = [
        [
            _round_label(r),
            _band(r),
            str((r.curriculum or {}).get("decision") or DASH),
            str((r.curriculum or {}).get("reason") or DASH),
        ]
        + [fmt_value((r.level_accuracy or {}).get(lv)) for lv in levels]
        for r in shown
    ]
    headers = ["round", "band", "decision", "why", *(f"level {lv}" for lv in levels)]
    return [
        "## Difficulty levels",
        "",
        *_md_table(headers, rows, set(range(4, len(headers)))),
        "",
        "Band: the difficulty levels the round trained on, chosen at its start from the "
        "incumbent's held-out accuracies; level columns: the round's checkpoint on each "
        "level's held-out prompts.",
        "",
    ]


def write_markdown(report: RunReport, path: Path, *, plot: str | None = None) -> Path:
    """Write :func:`markdown` to ``path`` (parents created); ``plot`` is an image link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(report, plot), encoding="utf-8")
    return path
