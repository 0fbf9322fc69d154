"""Which escalation rule a ticket meets, and why. Pure: no I/O, no clock (``now`` is passed in).

Rules are tried in policy order and the first one whose conditions all hold wins. Conditions:

- ``users_affected_at_least: N``  users_affected ≥ N
- ``sla_remaining_below: F``      (resolution_due − now) / (resolution_due − opened_at) < F;
                                  a ticket without resolution_due never meets it; an overdue
                                  ticket has a negative remainder and always meets it
- ``interactions_at_least: N``    interactions ≥ N
- ``open_longer_than: D``         now − opened_at > D
- ``segment: S`` or ``[S, …]``     the customer's segment is (one of) S, ignoring case
- ``priority_at_most: Pn``        the ticket is at least as urgent as Pn: P2 matches P1 and P2

A ticket lacking the field a condition reads (no users_affected, no segment, no priority…)
does not meet that condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.durations import format_duration
from schemas.policy import Rule, RuleConditions
from schemas.ticket import TicketFacts


@dataclass(frozen=True)
class Hit:
    rule: Rule
    detail: str  # "many-users: users_affected=40 ≥ 10"


def sla_remaining(ticket: TicketFacts, now: datetime) -> float | None:
    """Fraction of the SLA window left (negative once overdue); None without a window."""
    if ticket.resolution_due is None:
        return None
    window = (ticket.resolution_due - ticket.opened_at).total_seconds()
    if window <= 0:
        return None
    return (ticket.resolution_due - now).total_seconds() / window


def _rank(priority: str) -> int:
    return int(priority[1:])


def _age(value: timedelta) -> str:
    """A readable age, two units at most: ``1d 2h``, ``26m 5s``."""
    seconds = max(0, int(value.total_seconds()))
    units = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))
    first = next(i for i, (_, size) in enumerate(units) if seconds >= size or size == 1)
    parts = []
    for unit, size in units[first:first + 2]:
        parts.append(f"{seconds // size}{unit}")
        seconds %= size
    return " ".join(parts)


def reasons(when: RuleConditions, ticket: TicketFacts, now: datetime) -> list[str] | None:
    """Why every condition holds (in the order listed above); None if one does not."""
    found: list[str] = []
    if when.users_affected_at_least is not None:
        users = ticket.users_affected
        if users is None or users < when.users_affected_at_least:
            return None
        found.append(f"users_affected={users} ≥ {when.users_affected_at_least}")
    if when.sla_remaining_below is not None:
        left = sla_remaining(ticket, now)
        if left is None or not left < when.sla_remaining_below:
            return None
        found.append(f"sla_remaining={left:.2f} < {when.sla_remaining_below:g}")
    if when.interactions_at_least is not None:
        count = ticket.interactions
        if count is None or count < when.interactions_at_least:
            return None
        found.append(f"interactions={count} ≥ {when.interactions_at_least}")
    if when.open_longer_than is not None:
        age = now - ticket.opened_at
        if not age > when.open_longer_than:
            return None
        found.append(f"open for {_age(age)} > {format_duration(when.open_longer_than)}")
    if when.segment is not None:
        wanted = [when.segment] if isinstance(when.segment, str) else list(when.segment)
        segment = ticket.segment
        if segment is None or segment.casefold() not in {w.casefold() for w in wanted}:
            return None
        found.append(f"segment={segment}" + (f" in [{', '.join(wanted)}]" if len(wanted) > 1 else ""))
    if when.priority_at_most is not None:
        priority = ticket.priority
        if priority is None or _rank(priority) > _rank(when.priority_at_most):
            return None
        found.append(f"priority={priority} at least as urgent as {when.priority_at_most}")
    return found


def first_match(rules: list[Rule], ticket: TicketFacts, now: datetime) -> Hit | None:
    """The first rule whose conditions all hold, with a human detail; None if none does."""
    for rule in rules:
        found = reasons(rule.when, ticket, now)
        if found is not None:
            return Hit(rule=rule, detail=f"{rule.name}: {', '.join(found)}")
    return None
