"""The run's progress as a PNG: the primary metric and the selection yield per round.

Runs in: anywhere (writes the one file it is given). matplotlib is imported on first use so
``flywheel report --json`` does not pay for it, and the figure is drawn on an Agg canvas of
its own rather than through ``pyplot``: no global backend or figure registry is touched, so
it is safe in a server process and in threads.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from dataflywheel.reporting.summaries import RunReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def write_plot(report: RunReport, path: Path, *, dpi: int = 120) -> Path:
    """Plot the primary metric (left axis; rejected rounds marked, the base model dashed)
    and the yield (right axis, percent) against the round index; write a PNG to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    rounds = report.rounds
    index = [r.index for r in rounds]
    primary = [r.eval.primary if r.eval else math.nan for r in rounds]
    yields = [r.yield_ if r.yield_ is not None else math.nan for r in rounds]

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    metric = report.primary_metric
    handles = ax.plot(index, primary, marker="o", color="tab:blue", label=metric)
    rejected = [(r.index, r.eval.primary) for r in rounds if r.promoted is False and r.eval]
    if rejected:
        xs, ys = zip(*rejected, strict=True)
        handles += ax.plot(
            xs,
            ys,
            linestyle="none",
            marker="X",
            markersize=10,
            color="tab:red",
            label=f"{metric} (rejected)",
        )
    if report.baseline is not None:
        handles.append(
            ax.axhline(
                report.baseline.primary,
                linestyle="--",
                color="tab:gray",
                label=f"base model {metric}",
            )
        )
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    # Rounds are whole numbers: never a 0.5 tick. One labelled tick per round while they fit.
    if len(index) <= 25:
        ax.set_xticks(index or [0])
        ax.set_xticklabels([f"{r.index}\nwarm-up" if r.warmup else str(r.index) for r in rounds])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    _pad_limits(ax, [*primary, report.baseline.primary if report.baseline else math.nan])

    right = ax.twinx()
    handles += right.plot(
        index, yields, marker="s", linestyle=":", color="tab:orange", label="yield (kept / seen)"
    )
    right.set_ylabel("yield (kept / seen)")
    right.yaxis.set_major_formatter(PercentFormatter(1.0))
    right.set_ylim(0, 1.05)

    # The metric is what the reader came for: draw its axis (and the legend) above the yield's.
    ax.set_zorder(right.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(handles=handles, loc="best", fontsize="small")
    ax.set_title(f"run {report.id} · {report.name}: {metric} and yield per round")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path


def _pad_limits(ax: Axes, values: list[float]) -> None:
    """Room around the data so markers are not cut at the frame; a rate (all values in
    [0, 1]) starts at 0 so the height of a point reads as the rate itself."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    pad = max((high - low) * 0.1, 0.02)
    if low >= 0 and high <= 1:
        ax.set_ylim(0, min(high + pad, 1.05))
    else:
        ax.set_ylim(low - pad, high + pad)
