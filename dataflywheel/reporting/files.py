"""Where a run's report files live, and writing them: ``report.md`` beside ``report.png``.

Runs in: anywhere (writes the two files into the folder it is given). ``flywheel report``
and the ``finish_round`` task (which refreshes the report after every round and links it as
a Prefect artifact) use the same folder, ``<data dir>/reports/run-<id>``, so the files a run
leaves are the ones the command would write.
"""

from __future__ import annotations

from pathlib import Path

from dataflywheel.reporting.plot import write_plot
from dataflywheel.reporting.render import write_markdown
from dataflywheel.reporting.summaries import RunReport

MARKDOWN = "report.md"
PLOT = "report.png"


def report_folder(data_dir: Path, run_id: int) -> Path:
    """The default folder of run ``run_id``'s report under the data directory."""
    return data_dir / "reports" / f"run-{run_id}"


def write_report(report: RunReport, folder: Path) -> tuple[Path, Path]:
    """Write the PNG, then the Markdown that shows it; returns (markdown, plot) paths."""
    plot = write_plot(report, folder / PLOT)
    return write_markdown(report, folder / MARKDOWN, plot=plot.name), plot
