"""Run reports: per-round numbers from the system of record, as JSON, a table, Markdown, a PNG.

Runs in: anywhere with a database session (the CLI, API handlers, notebooks); building the
report only reads and never commits. ``report.py`` owns the queries (its docstring defines
every number), ``summaries.py`` the typed results, ``document.py`` the JSON schema,
``agreement.py`` the judge-vs-verifier agreement, ``runs.py`` the list of runs, ``render.py``
the terminal table and Markdown, ``plot.py`` the PNG and ``files.py`` where the report files
go.
"""

from dataflywheel.reporting.agreement import Agreement, tally
from dataflywheel.reporting.document import SCHEMA_VERSION, report_json
from dataflywheel.reporting.files import report_folder, write_report
from dataflywheel.reporting.plot import write_plot
from dataflywheel.reporting.render import markdown, render_table, write_markdown
from dataflywheel.reporting.report import RunNotFound, run_report
from dataflywheel.reporting.runs import RunListing, list_runs
from dataflywheel.reporting.summaries import (
    DatasetSummary,
    EvalSummary,
    RoundReport,
    RunReport,
    TrainingSummary,
    VerifierStats,
)

__all__ = [
    "SCHEMA_VERSION",
    "Agreement",
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
    "report_folder",
    "report_json",
    "run_report",
    "tally",
    "write_markdown",
    "write_plot",
    "write_report",
]
