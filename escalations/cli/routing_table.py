"""Routing tables printed by ``policy check``: where each kind opens, who is paged when."""

from __future__ import annotations

from datetime import datetime

from rich.table import Table

from schemas.policy import Policy
from workflows.routing import paging


def routing_tables(policy: Policy, at: datetime) -> list[Table]:
    routes = Table(title="Routing (category → entry point, per kind)")
    for column in ("category", "functional", "hierarchical", "priority"):
        routes.add_column(column)
    for category, target in sorted(policy.routes.items()):
        routes.add_row(category, target, "entry level of the priority + manager consulted",
                       "entry level of the priority + next level paged")
    routes.add_row("(other)", "rejected: no route", "entry level of the priority + manager consulted",
                   "entry level of the priority + next level paged")

    entries = Table(title="Entry level per priority")
    for column in ("priority", "entry", "paged with it (priority kind)", "consulted (hierarchical)"):
        entries.add_column(column)
    for name, targets in sorted(policy.priorities.items()):
        entry = targets.entry_level
        manager = policy.responder(entry).manager if hasattr(policy.responder(entry), "manager") else None
        entries.add_row(name, entry, policy.next_responder(entry) or "—", manager or targets.breach_notifies)

    paged = Table(title=f"Who would be paged at {at.isoformat()}")
    for column in ("level", "paged", "owner", "note"):
        paged.add_column(column)
    for responder in [*policy.level_ids, *policy.departments]:
        result = paging(policy, responder, at)
        paged.add_row(
            responder,
            ", ".join(f"{c.name} ({c.channel}:{c.target})" for c in result.recipients),
            result.owner.name if result.owner else "—",
            result.why or "",
        )
    return [routes, entries, paged]
