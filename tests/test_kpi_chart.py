"""The weekly KPI trend (SQL over the read model) and the ``kpis --chart`` drawing.

Escalations are simulated (``tests/helpers/simulation.py``) with backdated times and stored
through the real ``record_events`` activity into a real PostgreSQL, so the real projection
folds the read model. The weekly query is checked against values worked out by hand and
against the independent KPI computation (``tests/helpers/kpi_oracle.py``) week by week; the
chart is rendered to a PNG in the test's tmp dir and the same figure is inspected: whole
numbers on every count axis, durations in a unit that suits them, no box plot from fewer
than five points.
"""

from __future__ import annotations

import asyncio
import math
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment
from typer.testing import CliRunner

from activities.store import StoreActivities
from escalations.db.kpis import compute_kpis, resolution_times, weekly_kpis
from schemas.activities import RepeatQuery
from schemas.policy import Policy
from schemas.reporting import KpiFilters, WeeklyKpis
from tests.helpers.kpi_oracle import expected_kpis
from tests.helpers.requests import blog_request
from tests.helpers.simulation import BASE, Sim, pin_policies
from workflows.routing import fingerprint

pytest.importorskip("matplotlib", reason="the `charts` extra (matplotlib) is not installed: pip install -e '.[charts]'")

from escalations.cli.kpi_chart import BOX_PLOT_MIN, draw_chart, duration_unit, format_duration  # noqa: E402

H = timedelta(hours=1)


async def escalate(
    pg_pool: asyncpg.Pool, policy: Policy, number: int, opened_at: datetime, *, priority: str = "P2",
    resolve_after: timedelta | None = None, pause: tuple[timedelta, timedelta] | None = None,
) -> Sim:
    """One escalation opened at ``opened_at``, acknowledged after a minute, breached when its
    SLA runs out before ``resolve_after`` (net of the ``pause`` (start, length)), resolved
    then; left open without ``resolve_after``. Stored through the real activities."""
    request = blog_request(
        f"W-{number:03d}", priority=priority, policy=policy.name,
        customer={"id": f"cust-{number:03d}", "name": f"Customer {number:03d}", "segment": "smb"},
    )
    sim = Sim(policy, request, escalation_id=f"weekly-{number:03d}")
    store, env = StoreActivities(pg_pool), ActivityEnvironment()
    repeats = await env.run(store.find_repeats, RepeatQuery(
        escalation_id=sim.escalation_id, fingerprint=fingerprint(request), opened_at=opened_at,
        window=policy.repeat_window))
    sim.open(opened_at, repeats)
    sim.acknowledge(opened_at + timedelta(minutes=1), "dana")
    paused = timedelta(0)
    if pause is not None:
        start, length = pause
        sim.pause(opened_at + start, "dana")
        sim.resume(opened_at + start + length, "dana")
        paused = length
    if resolve_after is not None:
        breach = opened_at + paused + sim.targets.resolve_within
        if breach < opened_at + resolve_after:
            sim.breach(breach)
        sim.resolve(opened_at + resolve_after, "dana")
    for batch in sim.batches:
        await env.run(store.record_events, batch)
    return sim


def week(label: str, start: date, escalations: int, resolved: int, within: int,
         mean: float | None) -> WeeklyKpis:
    return WeeklyKpis(week=label, week_start=start, escalations=escalations, resolved=resolved,
                      resolved_within_sla=within, resolved_within_sla_share=within / resolved if resolved else None,
                      mean_time_to_resolution_seconds=mean)


async def several_weeks(pg_pool: asyncpg.Pool) -> list[Sim]:
    """Backdated escalations from 2026-W10 to 2027-W01 under the default policy (P1 4h, P2 8h)."""
    default = (await pin_policies(pg_pool))["default"]
    monday = BASE  # 2026-03-02, ISO 2026-W10
    plan = [
        (monday + 9 * H, "P2", 2 * H, None),  # W10: within SLA
        (monday + 10 * H, "P1", 6 * H, None),  # W10: breached at 4 h
        (monday + 11 * H, "P2", None, None),  # W10: still open
        (monday + timedelta(days=14) - timedelta(seconds=1), "P1", 1 * H, None),  # Sunday 23:59:59: W11
        (monday + timedelta(days=14), "P2", 3 * H, (30 * timedelta(minutes=1), 1 * H)),  # Monday 00:00: W12, 2 h net
        # W13: nothing
        (monday + timedelta(days=28, hours=8), "P2", None, None),  # W14: open
        (monday + timedelta(days=29, hours=8), "P2", None, None),  # W14: open
        (datetime(2026, 12, 29, 9, tzinfo=timezone.utc), "P2", timedelta(minutes=30), None),  # 2026-W53
        (datetime(2027, 1, 2, 9, tzinfo=timezone.utc), "P2", timedelta(minutes=90), None),  # Saturday: 2026-W53
        (datetime(2027, 1, 4, 9, tzinfo=timezone.utc), "P2", None, None),  # Monday: 2027-W01
    ]
    return [await escalate(pg_pool, default, number, opened_at, priority=priority, resolve_after=after, pause=pause)
            for number, (opened_at, priority, after, pause) in enumerate(plan)]


async def test_weekly_kpis_per_iso_week_opened(pg_pool):
    sims = await several_weeks(pg_pool)
    events = [e for s in sims for e in s.events]
    async with pg_pool.acquire() as conn:
        weekly = await weekly_kpis(conn, KpiFilters())
        # Every week from the first to the last, the empty ones included.
        assert len(weekly) == (date(2027, 1, 4) - date(2026, 3, 2)).days // 7 + 1 == 45
        assert [w.week_start.weekday() for w in weekly] == [0] * 45
        by_week = {w.week: w for w in weekly}
        assert by_week["2026-W10"] == week("2026-W10", date(2026, 3, 2), 3, 2, 1, (2 * 3600 + 6 * 3600) / 2)
        assert by_week["2026-W11"] == week("2026-W11", date(2026, 3, 9), 1, 1, 1, 3600)
        assert by_week["2026-W12"] == week("2026-W12", date(2026, 3, 16), 1, 1, 1, 2 * 3600)
        assert by_week["2026-W13"] == week("2026-W13", date(2026, 3, 23), 0, 0, 0, None)
        assert by_week["2026-W14"] == week("2026-W14", date(2026, 3, 30), 2, 0, 0, None)
        # ISO years: 2027-01-02 (a Saturday) is in 2026's 53rd week.
        assert by_week["2026-W53"] == week("2026-W53", date(2026, 12, 28), 2, 2, 2, 3600)
        assert weekly[-1] == week("2027-W01", date(2027, 1, 4), 1, 0, 0, None)
        assert sum(w.escalations for w in weekly) == len(sims)

        # The independent computation from the events agrees, week by week.
        for item in weekly:
            start = datetime.combine(item.week_start, datetime.min.time(), timezone.utc)
            expected = expected_kpis(events, {}, since=start, until=start + timedelta(days=7))
            assert (item.escalations, item.resolved, item.resolved_within_sla) == (
                expected["escalations"], expected["resolved"], expected["resolved_within_sla"]), item.week
            assert item.resolved_within_sla_share == expected["resolved_within_sla_share"], item.week
            assert item.mean_time_to_resolution_seconds == pytest.approx(
                expected["mean_time_to_resolution_seconds"]), item.week

        # Filters narrow what is counted and the span of weeks.
        p1 = await weekly_kpis(conn, KpiFilters(priority="P1"))
        assert p1 == [week("2026-W10", date(2026, 3, 2), 1, 1, 0, 6 * 3600),
                      week("2026-W11", date(2026, 3, 9), 1, 1, 1, 3600)]
        year_end = await weekly_kpis(conn, KpiFilters(since=datetime(2026, 12, 1, tzinfo=timezone.utc)))
        assert [(w.week, w.escalations) for w in year_end] == [("2026-W53", 2), ("2027-W01", 1)]
        assert await weekly_kpis(conn, KpiFilters(category="no-such-category")) == []

        # Weeks are UTC weeks whatever the session's time zone (Auckland is UTC+13 in March).
        await conn.execute("SET TimeZone = 'Pacific/Auckland'")
        assert await weekly_kpis(conn, KpiFilters()) == weekly


def visible_ticks(axis, which: str = "y") -> list[float]:  # type: ignore[no-untyped-def]
    ticks = axis.get_yticks() if which == "y" else axis.get_xticks()
    low, high = sorted(axis.get_ylim() if which == "y" else axis.get_xlim())
    return [t for t in ticks if low - 1e-9 <= t <= high + 1e-9]


def assert_whole_number_ticks(axis) -> None:  # type: ignore[no-untyped-def]
    ticks = visible_ticks(axis)
    assert len(ticks) >= 2, (axis.get_title(), ticks)
    assert all(float(t).is_integer() for t in ticks), (axis.get_title(), ticks)


def axes_by_title(figure) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {axis.get_title(): axis for axis in figure.axes if axis.get_title()}


COUNT_AXES = ("Escalations by category", "Escalations by level reached", "Time to resolution, net of pauses",
              "Per ISO week opened: escalations and % resolved within SLA")


async def chart(pg_pool: asyncpg.Pool, path: Path):  # type: ignore[no-untyped-def]
    """What ``escalations kpis --chart`` reads, drawn to ``path``."""
    async with pg_pool.acquire() as conn:
        filters = KpiFilters()
        report = await compute_kpis(conn, filters)
        times = await resolution_times(conn, filters)
        weekly = await weekly_kpis(conn, filters)
    figure = draw_chart(report, times, weekly, path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 10_000
    return figure, report, times, weekly


async def test_chart_of_few_short_resolutions(pg_pool, database_url, tmp_path):
    """Two resolutions of 14 s and 20 s: seconds, whole-number counts, the points and no box plot."""
    empty, *_ = await chart(pg_pool, tmp_path / "empty.png")
    titled = axes_by_title(empty)
    assert [t.get_text() for t in titled["Time to resolution, net of pauses: spread"].texts] == [
        "no resolved escalations"]
    assert [t.get_text() for t in titled["Per ISO week opened: mean time to resolution"].texts] == ["no escalations"]

    fast = (await pin_policies(pg_pool))["fast"]
    monday = BASE + timedelta(days=7, hours=9)
    for number, after in enumerate([timedelta(seconds=20), timedelta(seconds=14), None]):
        await escalate(pg_pool, fast, number, monday + number * H, resolve_after=after)

    figure, report, times, weekly = await chart(pg_pool, tmp_path / "few.png")
    assert (report.escalations, report.resolved, times) == (3, 2, [14.0, 20.0])
    axes = axes_by_title(figure)
    for title in COUNT_AXES:
        assert_whole_number_ticks(axes[title])
    histogram = axes["Time to resolution, net of pauses"]
    assert histogram.get_xlabel() == "seconds"
    assert max(visible_ticks(histogram, "x")) <= 25  # drawn in seconds, not 0.005 h
    p90 = report.p90_time_to_resolution_seconds
    assert p90 == pytest.approx(14 + 0.9 * 6)
    assert [t.get_text() for t in histogram.get_legend().get_texts()] == ["p90 19 s"]

    spread = axes["Time to resolution, net of pauses: spread"]
    assert spread.get_ylabel() == "seconds"
    # No box plot: one marker per escalation and the mean, nothing else.
    points, mean = spread.lines
    assert sorted(points.get_ydata()) == [14.0, 20.0] and points.get_marker() == "o"
    assert list(mean.get_ydata()) == [17.0, 17.0]
    assert [t.get_text() for t in spread.get_xticklabels()] == [
        f"2 resolved: too few for a box plot (< {BOX_PLOT_MIN})"]
    assert [t.get_text() for t in spread.get_legend().get_texts()] == ["one escalation", "mean 17 s"]

    trend = axes["Per ISO week opened: mean time to resolution"]
    assert [w.week for w in weekly] == ["2026-W11"]
    assert trend.get_ylabel() == "seconds"
    assert list(trend.lines[0].get_ydata()) == [17.0]

    # The command line draws the same chart from the same database.
    from starter import app

    drawn = tmp_path / "cli.png"
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["kpis", "--chart", str(drawn), "--data-dir", str(tmp_path)],
        env={"DATABASE_URL": database_url, "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert f"chart written to {drawn}" in result.stdout
    assert drawn.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


async def test_chart_with_a_box_plot_and_the_weekly_trend(pg_pool, tmp_path):
    await several_weeks(pg_pool)
    figure, report, times, weekly = await chart(pg_pool, tmp_path / "weekly.png")
    assert report.resolved == len(times) == 6 >= BOX_PLOT_MIN
    axes = axes_by_title(figure)
    for title in COUNT_AXES:
        assert_whole_number_ticks(axes[title])
    assert axes["Time to resolution, net of pauses"].get_xlabel() == "hours"
    spread = axes["Time to resolution, net of pauses: spread"]
    assert spread.get_ylabel() == "hours"
    assert len(spread.lines) >= 6  # box, median, two whiskers, two caps (and the mean marker)
    assert [t.get_text() for t in spread.get_xticklabels()] == ["6 resolved (▲ mean)"]

    volume = axes["Per ISO week opened: escalations and % resolved within SLA"]
    bars = [patch.get_height() for patch in volume.patches]
    assert bars == [w.escalations for w in weekly] and len(bars) == 45
    labels = [t.get_text() for t in volume.get_xticklabels()]
    assert labels[0] == "2026-W10" and len(labels) <= 16  # 45 weeks, every third labelled
    share = next(a for a in volume.get_shared_x_axes().get_siblings(volume) if a is not volume)
    line = share.lines[0].get_ydata()
    assert list(line[:2]) == [50.0, 100.0] and math.isnan(line[3])  # W13: nothing resolved, a gap

    trend = axes["Per ISO week opened: mean time to resolution"]
    assert trend.get_ylabel() == "hours"
    assert list(trend.lines[0].get_ydata()[:3]) == [4.0, 1.0, 2.0]


def test_duration_units_follow_the_magnitude():
    assert duration_unit([20]).name == "seconds" and format_duration(20) == "20 s"
    assert duration_unit([20, 119]).name == "seconds"
    assert duration_unit([20, 120]).name == "minutes" and format_duration(270) == "4.5 min"
    assert duration_unit([None, 7199]).name == "minutes"
    assert duration_unit([3 * 3600]).name == "hours" and format_duration(27 * 3600) == "27.0 h"
    assert duration_unit([2 * 86400]).name == "days" and format_duration(3.9 * 86400) == "3.9 d"
    assert duration_unit([]).name == "seconds" and duration_unit([None, math.nan]).name == "seconds"
    assert format_duration(20, duration_unit([3600 * 5])) == "0.0 h"  # a shared axis unit is the caller's choice
