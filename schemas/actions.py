"""Acting from the page: who may act on an escalation, and what a page lets its reader do.

Invariant: one rule decides both what a page offers and what is allowed when the offer is
taken up. The workflow applies it when it pages someone (``ActionGrant`` on the intent:
which signed links the page carries, bound to the level the escalation is at); the API
applies it again, to the same pinned policy and the live state, when a link is followed or
a Slack button pressed. Pure functions over the policy and the state; no I/O, no clock.

A contact stands toward an escalation at level ``L`` as

- ``owner``: a contact of ``L`` itself;
- ``consulted``: a contact of a level the escalation consults (hierarchical) and which has
  not acknowledged yet: it acknowledges as that level;
- ``above``: a contact of a level higher up the chain than ``L`` (a manager may act for the
  people below); departments count only as their own level.

Anyone else (a level below, another department, a name that is no contact) may not act.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from schemas.escalation import EscalationState
from schemas.policy import Policy

ActionName = Literal["acknowledge", "escalate", "note"]
ACTIONS: tuple[ActionName, ...] = ("acknowledge", "escalate", "note")
ACTION_LABELS: dict[str, str] = {"acknowledge": "Acknowledge", "escalate": "Escalate", "note": "Add a note"}
ACTION_DONE: dict[str, str] = {"acknowledge": "Acknowledged", "escalate": "Escalated", "note": "Note added"}

# Pages to people: opened, escalated (also when a held level's hours start), re-page at the
# last level, consulted, at risk, breached. Other messages (notes, customer updates,
# postmortems) carry no action links.
PAGE_TEMPLATES = frozenset({"escalation_opened", "escalated", "ack_reminder", "consulted", "sla_at_risk",
                            "sla_breached"})

Role = Literal["owner", "consulted", "above"]


class ActionGrant(BaseModel):
    """What a page lets its recipient do: decided by the workflow with the page, signed as
    one link per action by the activity that renders it (no clock or key in the workflow)."""

    level: str = Field(description="the escalation's level when paged: the links stop working once it moves")
    actions: list[ActionName] = Field(min_length=1)
    expires_at: AwareDatetime = Field(description="the page's time plus the policy's action_links.expire_after")


@dataclass(frozen=True)
class Standing:
    """How ``contact`` stands toward the escalation: ``role``, acting from level ``as_level``."""

    contact: str
    role: Role
    as_level: str


def levels_of(policy: Policy, contact: str) -> list[str]:
    """The levels and departments that list ``contact`` (by name), in policy order."""
    found = [level.id for level in policy.levels if any(c.name == contact for c in level.contacts)]
    found += [key for key, department in policy.departments.items()
              if any(c.name == contact for c in department.contacts)]
    return found


def contacts_of_slack_user(policy: Policy, user_id: str) -> list[str]:
    """The contact names whose ``slack_user_id`` is ``user_id`` (one, or none: the policy checks)."""
    names: list[str] = []
    for responder in [*policy.levels, *policy.departments.values()]:
        for contact in responder.contacts:
            if contact.slack_user_id == user_id and contact.name not in names:
                names.append(contact.name)
    return names


def standing(policy: Policy, contact: str, view: EscalationState) -> Standing | None:
    """How ``contact`` stands toward the escalation ``view`` (None: may not act on it)."""
    mine = levels_of(policy, contact)
    if view.level in mine:
        return Standing(contact, "owner", view.level)
    for consulted in view.consulted:
        if consulted.level in mine and consulted.acknowledged_at is None:
            return Standing(contact, "consulted", consulted.level)
    if view.level in policy.departments or view.level in policy.level_ids:
        rank = policy.rank(view.level)
        above = [level for level in mine if level in policy.level_ids and policy.rank(level) > rank]
        if above:
            return Standing(contact, "above", above[0])
    return None


def possible(policy: Policy, who: Standing, view: EscalationState) -> list[ActionName]:
    """What ``who`` can do to the escalation as it is now (what its page offers)."""
    if view.status not in ("open", "acknowledged", "paused"):
        return []
    found: list[ActionName] = []
    if who.role == "consulted" or view.deadlines.ack_due is not None:
        found.append("acknowledge")
    if who.role != "consulted" and policy.next_responder(view.level) is not None:
        found.append("escalate")
    found.append("note")
    return found


def refusal(policy: Policy, contact: str, view: EscalationState) -> str:
    """Why ``contact`` may not act on the escalation (when ``standing`` is None)."""
    mine = levels_of(policy, contact)
    where = f"{view.level_name} ({view.level})"
    if not mine:
        return f"{contact} is not a contact of policy {policy.name} v{policy.version}"
    listed = ", ".join(f"{policy.responder_name(level)} ({level})" for level in mine)
    return (f"{contact} is a contact of {listed}, which may not act on an escalation at {where}: "
            "only its own level, a level it consults, or a level above it may")
