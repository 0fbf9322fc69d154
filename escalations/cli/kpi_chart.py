"""The ``escalations kpis --chart`` drawing (matplotlib, the ``charts`` extra).

Three rows: frequency by category and by level reached; the time-to-resolution
distribution; the weekly trend (volume, share resolved within SLA, mean time to
resolution per ISO week opened). Counts get whole-number ticks only; durations are drawn
in the one unit (seconds, minutes, hours or days) that suits their largest value, so 20 s
reads "20 s", not "0.0 h"; a box plot needs at least ``BOX_PLOT_MIN`` values, fewer are
drawn as the points themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from schemas.reporting import KpiReport, WeeklyKpis

BOX_PLOT_MIN = 5
"""Below this many resolved escalations, quartiles say nothing: show the points instead."""
WEEK_LABELS_MAX = 16
"""More weeks than this and only every n-th week is labelled, so labels never overlap."""

BAR = "#4c72b0"
HISTOGRAM = "#55a868"
MARK = "#c44e52"


@dataclass(frozen=True)
class Unit:
    name: str  # axis label: "seconds", "minutes", ...
    short: str  # after a value: "s", "min", "h", "d"
    seconds: float


SECONDS = Unit("seconds", "s", 1)
MINUTES = Unit("minutes", "min", 60)
HOURS = Unit("hours", "h", 3600)
DAYS = Unit("days", "d", 86400)


def duration_unit(values: Sequence[float | None]) -> Unit:
    """The unit that suits the largest value: under 2 minutes seconds, under 2 hours minutes,
    under 2 days hours, else days (the thresholds of the CLI's own table)."""
    largest = max((abs(v) for v in values if v is not None and not math.isnan(v)), default=0.0)
    if largest < 120:
        return SECONDS
    if largest < 2 * 3600:
        return MINUTES
    if largest < 2 * 86400:
        return HOURS
    return DAYS


def format_duration(seconds: float, unit: Unit | None = None) -> str:
    """``20 s``, ``4.5 min``, ``27.0 h``, ``3.9 d``; whole seconds need no decimals."""
    unit = unit or duration_unit([seconds])
    value = seconds / unit.seconds
    return f"{value:.0f} {unit.short}" if unit is SECONDS else f"{value:.1f} {unit.short}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _whole_number_ticks(axis: Axes, which: str = "y") -> None:
    from matplotlib.ticker import MaxNLocator

    (axis.yaxis if which == "y" else axis.xaxis).set_major_locator(MaxNLocator(integer=True))


def _note(axis: Axes, text: str) -> None:
    axis.text(0.5, 0.5, text, ha="center", va="center", transform=axis.transAxes, wrap=True)


def draw_chart(  # type: ignore[no-untyped-def]
    report: KpiReport, resolution_seconds: list[float], weekly: list[WeeklyKpis], path: Path
) -> Figure:
    """Draw the KPIs into the PNG ``path``; returns the figure (for inspection)."""
    # The object-oriented API: no pyplot, so no global figure state and no GUI backend.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 12), layout="constrained")
    (categories, levels), (histogram, spread), (volume, mttr) = figure.subplots(3, 2)
    _frequency(categories, report.by_category, "Escalations by category")
    _frequency(levels, report.by_level_reached, "Escalations by level reached")
    _resolution(histogram, spread, resolution_seconds, report.p90_time_to_resolution_seconds)
    _weekly(volume, mttr, weekly)
    figure.suptitle(f"{report.escalations} escalations · {report.resolved} resolved · "
                    f"{_share(report.resolved_within_sla_share)} within SLA · CSAT "
                    + ("—" if report.csat_average is None else f"{report.csat_average:.2f}"))
    figure.savefig(path, format="png", dpi=100)
    return figure


def _frequency(axis: Axes, items, title: str) -> None:  # type: ignore[no-untyped-def]
    axis.set_title(title)
    axis.set_ylabel("escalations")
    _whole_number_ticks(axis)
    if not items:
        _note(axis, "no escalations")
        return
    axis.bar(range(len(items)), [i.escalations for i in items], color=BAR)
    axis.set_xticks(range(len(items)), [i.key for i in items], rotation=30, ha="right")


def _resolution(histogram: Axes, spread: Axes, seconds: list[float], p90: float | None) -> None:
    unit = duration_unit(seconds)
    values = [s / unit.seconds for s in seconds]
    histogram.set_title("Time to resolution, net of pauses")
    histogram.set_xlabel(unit.name)
    histogram.set_ylabel("escalations")
    _whole_number_ticks(histogram)
    spread.set_title("Time to resolution, net of pauses: spread")
    spread.set_ylabel(unit.name)
    if not values:
        for axis in (histogram, spread):
            _note(axis, "no resolved escalations")
        return
    histogram.hist(values, bins=min(30, max(5, len(values) // 5)), color=HISTOGRAM)
    if p90 is not None:
        histogram.axvline(p90 / unit.seconds, color=MARK, linestyle="--", label=f"p90 {format_duration(p90, unit)}")
        histogram.legend()
    if len(values) >= BOX_PLOT_MIN:
        spread.boxplot(values, showmeans=True)
        spread.set_xticks([1], [f"{len(values)} resolved (▲ mean)"])
        return
    # Too few for quartiles: every value as a point, the mean as a line.
    spread.plot([1] * len(values), values, "o", color=HISTOGRAM, label="one escalation")
    mean = sum(values) / len(values)
    spread.axhline(mean, color=MARK, linestyle=":", label=f"mean {format_duration(mean * unit.seconds, unit)}")
    spread.set_xticks([1], [f"{len(values)} resolved: too few for a box plot (< {BOX_PLOT_MIN})"])
    spread.legend()


def _weekly(volume: Axes, mttr: Axes, weekly: list[WeeklyKpis]) -> None:
    volume.set_title("Per ISO week opened: escalations and % resolved within SLA")
    _whole_number_ticks(volume)
    mttr.set_title("Per ISO week opened: mean time to resolution")
    if not weekly:
        for axis in (volume, mttr):
            _note(axis, "no escalations")
        return
    from matplotlib.ticker import PercentFormatter

    positions = list(range(len(weekly)))
    step = math.ceil(len(weekly) / WEEK_LABELS_MAX)
    ticks = positions[::step]
    labels = [weekly[i].week for i in ticks]

    volume.bar(positions, [w.escalations for w in weekly], color=BAR)
    volume.set_ylabel("escalations opened (bars)", color=BAR)
    within = volume.twinx()
    # A week with nothing resolved has no share: a gap in the line, not a 0 %.
    within.plot(positions, [math.nan if w.resolved_within_sla_share is None else w.resolved_within_sla_share * 100
                            for w in weekly], "o-", color=MARK)
    within.set_ylim(0, 105)
    within.yaxis.set_major_formatter(PercentFormatter(100))
    within.set_ylabel("resolved within SLA (line)", color=MARK)
    volume.set_xticks(ticks, labels, rotation=30, ha="right")

    means = [w.mean_time_to_resolution_seconds for w in weekly]
    unit = duration_unit(means)
    mttr.set_ylabel(unit.name)
    mttr.plot(positions, [math.nan if m is None else m / unit.seconds for m in means], "o-", color=HISTOGRAM)
    mttr.set_ylim(bottom=0)
    mttr.set_xticks(ticks, labels, rotation=30, ha="right")
    if all(m is None for m in means):
        _note(mttr, "nothing resolved yet")
