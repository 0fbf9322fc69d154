"""The ``escalations kpis --chart`` drawing (matplotlib, the ``charts`` extra)."""

from __future__ import annotations

from pathlib import Path


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def draw_chart(report, resolution_seconds: list[float], path: Path) -> None:  # type: ignore[no-untyped-def]
    """Frequency by category and by level reached, and time to resolution (hours)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    for axis, items, title in (
        (axes[0][0], report.by_category, "Escalations by category"),
        (axes[0][1], report.by_level_reached, "Escalations by level reached"),
    ):
        axis.bar(range(len(items)), [i.escalations for i in items], color="#4c72b0")
        axis.set_xticks(range(len(items)), [i.key for i in items], rotation=30, ha="right")
        axis.set_title(title)
        axis.set_ylabel("escalations")
    hours = [s / 3600 for s in resolution_seconds]
    histogram, box = axes[1][0], axes[1][1]
    histogram.set_title("Time to resolution, net of pauses (h)")
    box.set_title("Time to resolution, net of pauses (h)")
    if hours:
        histogram.hist(hours, bins=min(30, max(5, len(hours) // 5)), color="#55a868")
        box.boxplot(hours, showmeans=True)
        box.set_xticks([1], [f"{len(hours)} resolved (▲ mean)"])
        if report.p90_time_to_resolution_seconds is not None:
            p90 = report.p90_time_to_resolution_seconds / 3600
            histogram.axvline(p90, color="#c44e52", linestyle="--", label=f"p90 {p90:.1f} h")
            histogram.legend()
    else:
        for axis in (histogram, box):
            axis.text(0.5, 0.5, "no resolved escalations", ha="center", va="center",
                      transform=axis.transAxes)
    histogram.set_xlabel("hours")
    histogram.set_ylabel("escalations")
    box.set_ylabel("hours")
    share = _share(report.resolved_within_sla_share)
    figure.suptitle(f"{report.escalations} escalations · {report.resolved} resolved · "
                    f"{share} within SLA · CSAT "
                    + ("—" if report.csat_average is None else f"{report.csat_average:.2f}"))
    figure.tight_layout()
    try:
        figure.savefig(path, format="png", dpi=100)
    finally:
        plt.close(figure)
