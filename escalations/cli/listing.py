"""``escalations list``: the table that fits the terminal, and the JSON that has everything.

The ticket id is the one value people copy, so it is never cut or wrapped. The other columns
are ranked; the lowest-ranked ones are left out until the table fits the console's width
(measured by rich, as it will be drawn), and the caption names what was left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from escalations.cli.times import relative
from escalations.client import EscalationSummary
from schemas.escalation import StatusFilter
from schemas.policy import Kind, Priority


class Filters(BaseModel):
    status: StatusFilter | None = None
    priority: Priority | None = None
    kind: Kind | None = None


# -- JSON: the documented schema (docs/cli.md#json-output, docs/schemas/cli-list.schema.json) ----


class ListedEscalation(BaseModel):
    ticket_id: str
    workflow_id: str
    run_id: str
    status: str | None
    priority: str | None
    level: str | None
    customer_id: str | None
    category: str | None
    kind: str | None
    sla_breached: bool | None
    next_deadline: AwareDatetime | None
    started_at: AwareDatetime
    closed_at: AwareDatetime | None


class EscalationList(BaseModel):
    items: list[ListedEscalation]
    more: bool
    """More escalations match than --limit allowed."""


def as_json(items: Sequence[EscalationSummary], *, more: bool) -> str:
    listed = [ListedEscalation.model_validate(item.model_dump(include=set(ListedEscalation.model_fields)))
              for item in items]
    return EscalationList(items=listed, more=more).model_dump_json(indent=2)


# -- the table --------------------------------------------------------------------------


def _utc(at: datetime | None) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M}" if at else "—"


def _next_deadline(item: EscalationSummary, now: datetime) -> str:
    # An ended run keeps its last search attributes: its deadlines no longer mean anything.
    if item.closed_at is not None or item.next_deadline is None:
        return "—"
    return relative(item.next_deadline, now)


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[EscalationSummary, datetime], str]
    rank: int
    """Kept longer the higher it is; the ticket id is never left out."""


COLUMNS: tuple[Column, ...] = (
    Column("ticket", lambda item, now: item.ticket_id, rank=100),
    Column("status", lambda item, now: item.status or "?", rank=90),
    Column("prio", lambda item, now: item.priority or "?", rank=80),
    Column("SLA", lambda item, now: "BREACHED" if item.sla_breached else "ok", rank=70),
    Column("next deadline", _next_deadline, rank=60),
    Column("level", lambda item, now: item.level or "?", rank=50),
    Column("customer", lambda item, now: item.customer_id or "?", rank=40),
    Column("category", lambda item, now: item.category or "?", rank=20),
    Column("kind", lambda item, now: item.kind or "?", rank=10),
    Column("started (UTC)", lambda item, now: _utc(item.started_at), rank=30),
    Column("closed (UTC)", lambda item, now: _utc(item.closed_at), rank=5),
)


def _build(columns: Sequence[Column], items: Sequence[EscalationSummary], now: datetime, title: str,
           caption: str | None) -> Table:
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    for column in columns:
        if column.header == "ticket":
            longest = max((len(item.ticket_id) for item in items), default=0)
            table.add_column(column.header, no_wrap=True, min_width=max(longest, len(column.header)))
        else:
            table.add_column(column.header, overflow="fold")
    for item in items:
        table.add_row(*(column.cell(item, now) for column in columns))
    return table


def table(items: Sequence[EscalationSummary], *, now: datetime, more: bool, console: Console) -> Table:
    """The list as a table no wider than ``console``: lowest-ranked columns left out first."""
    title = f"Escalations: {len(items)}" + (" (more match: raise --limit)" if more else "")
    shown = list(COLUMNS)
    wide = console.options.update_width(100_000)
    while True:
        left_out = [column.header for column in COLUMNS if column not in shown]
        caption = f"not shown at this width: {', '.join(left_out)} (--json has every field)" if left_out else None
        candidate = _build(shown, items, now, title, caption)
        # The caption wraps to the table's width; only the columns decide what fits.
        needed = Measurement.get(console, wide, _build(shown, items, now, "", None)).maximum
        if needed <= console.width or len(shown) <= 2:
            return candidate
        shown.remove(min((c for c in shown if c.header != "ticket"), key=lambda c: c.rank))
