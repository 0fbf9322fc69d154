"""What an operator sees of a run in Temporal UI: search attributes and current details (pure).

Invariant: both are functions of the run state alone; the workflow upserts only the
search attributes whose value changed, so the same state never writes twice.
"""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeUpdate

from schemas import keys
from schemas.escalation import summary_for
from workflows.transitions import Change, RunState, upcoming


def search_attributes(state: RunState, *, owner: bool = True) -> dict[str, Any]:
    """The contract's search attributes for ``state`` (None: unset); ``owner`` False for runs of
    the released commit path, which never set ``EscalationOwner`` (their replay must not change)."""
    view = state.view
    pending = [d for d in (view.deadlines.ack_due, view.deadlines.resolve_due if not view.sla_breached else None,
                           view.deadlines.next_customer_update_due) if d is not None]
    return {
        keys.PRIORITY.name: view.priority,
        keys.LEVEL.name: view.level,
        keys.STATUS.name: view.status,
        keys.CUSTOMER.name: view.customer.id,
        keys.CATEGORY.name: view.category,
        keys.KIND.name: view.kind,
        keys.BREACHED.name: view.sla_breached,
        keys.NEXT_DEADLINE.name: min(pending) if pending else None,
        **({keys.OWNER.name: view.owner} if owner else {}),
    }


def changed_attributes(wanted: dict[str, Any], published: dict[str, Any]) -> list[SearchAttributeUpdate]:
    """Updates for the attributes whose value differs from what was last published."""
    by_name = {key.name: key for key in keys.SEARCH_ATTRIBUTES}
    return [
        by_name[name].value_set(value) if value is not None else by_name[name].value_unset()
        for name, value in wanted.items()
        if published.get(name, ...) != value
    ]


def details(state: RunState, summary: str, last: Change | None, *, full: bool = True) -> str:
    """Current details (Markdown): status, level, owner, next deadline, SLA and the contract whose
    targets apply, the path (every move: from → to, auto or by whom, when, why; ``full`` False:
    the last only, as released runs show it) and failed notifications (count and last error)."""
    view = state.view
    nxt_due = upcoming(state) if view.status not in ("resolved", "closed") else []
    nxt = f"{nxt_due[0].label} at {nxt_due[0].at:%Y-%m-%d %H:%M:%S} UTC" if nxt_due else "none"
    owner = view.owner or "—"
    if view.owner_contact:
        owner += f" ({view.owner_contact.channel}: {view.owner_contact.target})"
    lines = [
        f"**{summary}**",
        f"**Status** {view.status} · **Level** {view.level_name} (`{view.level}`) · **Owner** {owner}",
        f"**Next deadline** {nxt}",
        f"**SLA** {'BREACHED' if view.sla_breached else ('at risk' if view.sla_at_risk else 'on track')}"
        + (f" · resolve by {view.deadlines.resolve_due:%Y-%m-%d %H:%M:%S} UTC" if view.deadlines.resolve_due else "")
        + (f" · **Contract** `{view.contract}`" if view.contract else " · **Contract** none (policy targets)"),
    ]
    if view.path and not full:
        move = view.path[-1]
        lines.append(f"**Last transition** {move.from_level} → {move.to_level} "
                     f"({'auto' if move.auto else 'by ' + (move.by or '?')}) at {move.at:%H:%M:%S} UTC: {move.reason}")
    elif view.path:
        moves = [f"{n}. {m.from_level or '—'} → {m.to_level} ({'auto' if m.auto else 'by ' + (m.by or '?')}) "
                 f"at {m.at:%Y-%m-%d %H:%M:%S} UTC: {m.reason}" for n, m in enumerate(view.path, start=1)]
        lines.append("**Path**\n\n" + "\n".join(moves))
    if full and view.notifications_failed:
        lines.append(f"**Failed notifications** {view.notifications_failed}"
                     + (f" · last: {view.last_notification_error}" if view.last_notification_error else ""))
    if last is not None:
        lines.append(f"**Last event** `{last.type}` #{view.last_seq}")
    if view.postmortem:
        lines.append(f"**Postmortem** owner {view.postmortem.owner}, due {view.postmortem.due:%Y-%m-%d %H:%M} UTC"
                     + (" · done" if view.postmortem.completed_at else ""))
    return "\n\n".join(lines)


__all__ = ["changed_attributes", "details", "search_attributes", "summary_for"]
