"""Run reports: per-round numbers from the system of record, as JSON, a table, Markdown, a PNG.

Runs in: anywhere with a database session (the CLI, API handlers, notebooks); building the
report only reads and never commits. ``report.py`` owns the queries and the JSON schema (its
docstring documents every field), ``render.py`` the terminal table and Markdown, ``plot.py``
the PNG.
"""

from dataflywheel.reporting.document import SCHEMA_VERSION, report_json
from dataflywheel.reporting.plot import write_plot
from dataflywheel.reporting.render import markdown, render_table, write_markdown
from dataflywheel.reporting.report import (
    DatasetSummary,
    EvalSummary,
    RoundReport,
    RunNotFound,
    RunReport,
    TrainingSummary,
    VerifierStats,
    run_report,
)
from dataflywheel.reporting.runs import RunListing, list_runs

__all__ = [
    "SCHEMA_VERSION",
    "DatasetSummary",
    "EvalSummary",
    "RoundReport",
    "RunListing",
    "RunNotFound",
    "RunReport",
    "TrainingSummary",
    "VerifierStats",
    "list_runs",
    "markdown",
    "render_table",
    "report_json",
    "run_report",
    "write_markdown",
    "write_plot",
]
