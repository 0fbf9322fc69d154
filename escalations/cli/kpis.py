"""``escalations kpis``, ``csat`` and ``rebuild-read-model``: the reporting side."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from escalations.cli.failing import DataDirOption, fail, guarded
from escalations.cli.failing import data_dir as choose_data_dir

T = TypeVar("T")

DataDir = DataDirOption


def register(app: typer.Typer) -> None:
    app.command("kpis")(guarded(kpis))
    app.command("csat")(guarded(csat))
    app.command("rebuild-read-model")(guarded(rebuild_read_model))


def _moment(value: str | None, option: str, now: datetime) -> datetime | None:
    """ISO-8601 (naive means UTC), a date, or a duration back from now (``7d``, ``12h``)."""
    if value is None:
        return None
    from schemas.durations import parse_duration

    try:
        back = parse_duration(value)
    except ValueError:
        back = None
    if isinstance(back, timedelta):
        return now - back
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(
            f"{option} {value!r}: use ISO-8601 (2026-05-01 or 2026-05-01T09:00:00Z) "
            "or a duration back from now (7d, 12h)"
        )
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _run_with_database(data_dir: Path | None, work: Callable[..., Awaitable[T]]) -> T:
    """Connect (environment first, then DIR/stack.json), run ``work(conn)``, map failures."""
    import asyncpg

    from escalations.connect import StackNotFound, require_database, resolve
    from escalations.db.pool import create_pool

    try:
        url = require_database(resolve(choose_data_dir(data_dir)))
    except StackNotFound as exc:
        fail(str(exc))

    async def main() -> T:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                return await work(conn)
        finally:
            await pool.close()

    try:
        return asyncio.run(main())
    except asyncpg.UndefinedTableError as exc:
        fail(f"database is not migrated ({exc}); run `escalations migrate`")
    except (asyncpg.PostgresError, OSError) as exc:
        fail(f"database: {exc}".splitlines()[0])


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    value = float(value)
    if value < 120:
        return f"{value:.0f}s"
    if value < 2 * 3600:
        return f"{value / 60:.1f}m"
    if value < 2 * 86400:
        return f"{value / 3600:.1f}h"
    return f"{value / 86400:.1f}d"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def kpis(
    since: Annotated[str | None, typer.Option(help="Opened at or after (ISO-8601, or 30d back from now)")] = None,
    until: Annotated[str | None, typer.Option(help="Opened before (ISO-8601, or 1d back from now)")] = None,
    priority: Annotated[str | None, typer.Option(help="Only this priority (P1-P4)")] = None,
    category: Annotated[str | None, typer.Option(help="Only this category")] = None,
    contract: Annotated[
        str | None, typer.Option(help="Only escalations under this contract key ('none': under no contract)")
    ] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the report as JSON (the schema: docs/cli.md#json-output)")] = False,
    chart: Annotated[Path | None, typer.Option(help="Also draw the KPIs into this PNG file")] = None,
    data_dir: DataDir = None,
) -> None:
    """Escalation KPIs: SLA, time to resolution, CSAT, repeats, frequency by category and level, per contract."""
    from pydantic import ValidationError

    from escalations.db.kpis import compute_kpis, resolution_times, weekly_kpis
    from schemas.reporting import KpiFilters

    now = datetime.now(timezone.utc)
    try:
        filters = KpiFilters(
            since=_moment(since, "--since", now), until=_moment(until, "--until", now),
            priority=priority, category=category, contract=contract,
        )
    except ValidationError as exc:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        fail(problems)

    if chart is not None:
        try:
            import matplotlib  # noqa: F401 - the `charts` extra; checked before any query
        except ImportError:
            fail("--chart needs matplotlib, which is not installed: pip install 'escalations[charts]'")

    async def work(conn):  # type: ignore[no-untyped-def]
        report = await compute_kpis(conn, filters)
        times = await resolution_times(conn, filters) if chart else []
        weekly = await weekly_kpis(conn, filters) if chart else []
        return report, times, weekly

    report, times, weekly = _run_with_database(data_dir, work)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _print_report(report)
    if chart is not None:
        from escalations.cli.kpi_chart import draw_chart

        try:
            draw_chart(report, times, weekly, chart)
        except OSError as exc:
            fail(f"cannot write {chart}: {exc}")
        if not as_json:
            typer.echo(f"chart written to {chart}")


def _print_report(report) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    f = report.filters
    scope = ", ".join(
        part for part in (
            f"since {f.since.isoformat()}" if f.since else "",
            f"until {f.until.isoformat()}" if f.until else "",
            f"priority {f.priority}" if f.priority else "",
            f"category {f.category}" if f.category else "",
            f"contract {f.contract}" if f.contract else "",
        ) if part
    ) or "all escalations"
    table = Table(title=f"Escalation KPIs · {scope}")
    table.add_column("KPI")
    table.add_column("value", justify="right")
    table.add_column("of", justify="right")
    table.add_row("escalations", str(report.escalations), "")
    table.add_row("resolved", str(report.resolved), str(report.escalations))
    table.add_row("resolved within SLA", _share(report.resolved_within_sla_share),
                  f"{report.resolved_within_sla}/{report.resolved}")
    table.add_row("mean time to resolution (net of pauses)",
                  _seconds(report.mean_time_to_resolution_seconds), str(report.resolved))
    table.add_row("p90 time to resolution (net of pauses)",
                  _seconds(report.p90_time_to_resolution_seconds), str(report.resolved))
    table.add_row("CSAT average (1-5)",
                  "—" if report.csat_average is None else f"{report.csat_average:.2f}",
                  f"{report.csat_responses} responses")
    table.add_row("CSAT response rate", _share(report.csat_response_rate),
                  f"{report.csat_responses}/{report.resolved}")
    table.add_row("repeat escalations", str(report.repeat_escalations), str(report.escalations))
    console = Console()
    console.print(table)
    frequencies = Table(title="Escalation frequency")
    for column in ("by category", "#", "by level reached", "#", "by kind", "#", "by priority", "#"):
        frequencies.add_column(column, justify="right" if column == "#" else "left")
    columns = [report.by_category, report.by_level_reached, report.by_kind, report.by_priority]
    for index in range(max((len(c) for c in columns), default=0)):
        cells: list[str] = []
        for column in columns:
            item = column[index] if index < len(column) else None
            cells.extend([item.key, str(item.escalations)] if item else ["", ""])
        frequencies.add_row(*cells)
    console.print(frequencies)
    by_contract = Table(title="By contract")
    for column in ("contract", "escalations", "resolved", "within SLA", "mean to resolve", "p90 to resolve",
                   "CSAT"):
        by_contract.add_column(column, justify="left" if column == "contract" else "right")
    for group in report.by_contract:
        by_contract.add_row(
            group.contract or "(none: policy targets)", str(group.escalations), str(group.resolved),
            f"{_share(group.resolved_within_sla_share)} ({group.resolved_within_sla}/{group.resolved})",
            _seconds(group.mean_time_to_resolution_seconds), _seconds(group.p90_time_to_resolution_seconds),
            "—" if group.csat_average is None else f"{group.csat_average:.2f} ({group.csat_responses})",
        )
    console.print(by_contract)


def csat(
    ticket_id: Annotated[str, typer.Argument(help="Ticket whose latest escalation is rated")],
    score: Annotated[int, typer.Option(help="1 (very unhappy) to 5 (very happy)")],
    comment: Annotated[str | None, typer.Option(help="The customer's words")] = None,
    data_dir: DataDir = None,
) -> None:
    """Record the customer's CSAT score for the ticket's latest (resolved) escalation."""
    from pydantic import ValidationError

    from escalations.db.csat import CsatError, record_csat
    from schemas.reporting import CsatSubmission

    try:
        submission = CsatSubmission(score=score, comment=comment)
    except ValidationError as exc:
        fail("; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors()))

    async def work(conn):  # type: ignore[no-untyped-def]
        return await record_csat(conn, ticket_id, submission, datetime.now(timezone.utc))

    try:
        result = _run_with_database(data_dir, work)
    except CsatError as exc:
        fail(str(exc))
    typer.echo(f"recorded CSAT {result.score} for {result.ticket_id} "
               f"(escalation {result.escalation_id}) at {result.received_at.isoformat()}")


def rebuild_read_model(data_dir: DataDir = None) -> None:
    """Truncate the escalations read model and replay it from escalation_events."""
    from escalations.db.eventstore import rebuild, sizes
    from escalations.db.projection import ProjectionError

    async def work(conn):  # type: ignore[no-untyped-def]
        before, events = await sizes(conn)
        return before, events, await rebuild(conn)

    try:
        before, events, rebuilt = _run_with_database(data_dir, work)
    except ProjectionError as exc:
        fail(f"rebuild aborted, read model unchanged: {exc}")
    typer.echo(f"rebuilt the read model: {rebuilt} escalations from {events} events "
               f"({before} rows before)")
