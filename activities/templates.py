"""Every text a notification carries, in one place.

A template (one per ``Template`` id in ``schemas/notifications.py``) turns an
intent's ``context`` into a subject and a list of blocks (paragraphs, bullet
lists, links). ``render`` adds what every internal message shows (facts such as
priority, customer, level and the next deadline, and a link to the run in
Temporal UI) and gives the plain-text and HTML bodies; the channel senders only
arrange these pieces in their own format and never write prose of their own.

Times are shown as "Fri 27 Nov 2026, 14:00 CET": in the customer's time zone
(``escalation.customer.timezone``, default UTC) for the customer, in UTC for
everyone else. A missing optional value renders as "—"; a context without
``escalation`` is a bug in the caller and raises ``ValueError``.

What comes out is clean text, never markup: single-line values (titles, names,
reasons) have no control characters or line breaks, multi-line ones (notes, logs)
only ``\n`` and tabs; subjects and headlines are one line. Each channel escapes it
for its own format. A ``Link`` is only ever made for an ``https:`` or ``mailto:``
URL (``safe_url``). Lines a reader must not lose when a channel shortens a message
to its size limit (deadlines, reasons) are ``Kept``; ``fit`` shortens the others first.

A page to a person also carries its signed action links (``Action``: acknowledge, escalate,
add a note), made by the delivery activity and passed to ``render``; customers never get any.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from escalations.links import is_loopback_http
from schemas.text import one_line

MISSING = "—"
OPEN_IN_UI = "Open in Temporal UI"

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DEADLINES = (
    ("ack_due", "Acknowledge by"),
    ("resolve_due", "Resolve by"),
    ("next_customer_update_due", "Customer update by"),
)
_KIND_WORDS = {"functional": "functional", "hierarchical": "hierarchical", "priority": "priority-based"}
_UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}


# -- message pieces ---------------------------------------------------------


class Kept(str):
    """A line that stays whole when a channel shortens a message (deadlines, reasons)."""

    __slots__ = ()


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Link:
    """A link to a URL ``safe_url`` accepted; build it with ``link``."""

    label: str
    url: str


Block = str | Bullets | Link


def add_block_texts(blocks: Sequence[Block], texts: list[str], kept: set[int]) -> None:
    """Append the blocks' texts to ``texts`` in order; note in ``kept`` where ``Kept`` lines land.

    For channels that shorten a message text by text (Teams, Jira) and must not cut a kept line.
    """
    for block in blocks:
        if isinstance(block, Bullets):
            texts.extend(block.items)
        elif isinstance(block, Link):
            texts.append(block.label)
        else:
            if isinstance(block, Kept):
                kept.add(len(texts))
            texts.append(block)

SAFE_SCHEMES = frozenset({"https", "mailto"})


def safe_url(url: Any) -> str | None:
    """``url`` if it may become a link anywhere: ``https:`` with a host, or ``mailto:``.

    Everything else (``javascript:``, ``data:``, plain ``http:``, relative or malformed URLs,
    URLs with spaces or control characters) is refused: a message never carries a link that
    runs script or sends its reader somewhere unencrypted.
    """
    if not isinstance(url, str) or not url or url != url.strip() or re.search(r"[\s\x00-\x1f\x7f-\x9f]", url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in SAFE_SCHEMES:
        return None
    if scheme == "https" and not parts.hostname:
        return None
    if scheme == "mailto" and not parts.path:
        return None
    return url


def link(label: str, url: Any) -> Link | None:
    """A ``Link`` if ``url`` is safe (``safe_url``), else None."""
    safe = safe_url(url)
    return Link(label, safe) if safe is not None else None


@dataclass(frozen=True)
class Action:
    """A signed action link of a page (``activities.notifications`` makes them).

    ``name`` is the action (acknowledge, escalate, note), ``label`` its button text, ``url``
    the absolute link (``<ESCALATION_PUBLIC_URL>/actions/<name>/<token>``) and ``token`` the
    signed token alone (what a Slack button sends back when it acts in Slack).
    """

    name: str
    label: str
    url: str
    token: str


def action_url_ok(url: Any) -> bool:
    """Whether an action link may become a button: ``safe_url``, or ``http:`` on this machine
    (the dev stack's public URL is its API on 127.0.0.1, reached by nobody else)."""
    if safe_url(url) is not None:
        return True
    return (isinstance(url, str) and is_loopback_http(url) and url == url.strip()
            and not re.search(r"[\s\x00-\x1f\x7f-\x9f]", url))


@dataclass(frozen=True)
class Section:
    """A titled part of the handoff context (Jira issue description)."""

    title: str
    text: str
    code: bool = False


@dataclass(frozen=True)
class Rendered:
    """One message, ready for any channel."""

    template: str
    audience: str
    subject: str
    headline: str
    blocks: tuple[Block, ...]
    facts: tuple[tuple[str, str], ...] = ()
    link: Link | None = None
    footer: str = ""
    internal: bool = True
    actions: tuple[Action, ...] = ()

    @property
    def summary(self) -> str:
        """The blocks as plain text, without facts or link (chat cards show those apart)."""
        return "\n\n".join(_block_text(block) for block in self.blocks)

    @property
    def text(self) -> str:
        """The full plain-text body (email text part, webhook ``message.text``, log)."""
        parts = [self.summary]
        if self.facts:
            parts.append("\n".join(f"{label}: {value}" for label, value in self.facts))
        if self.actions:
            parts.append("\n".join(f"{action.label}: {action.url}" for action in self.actions))
        if self.link is not None:
            parts.append(f"{self.link.label}: {self.link.url}")
        if self.footer:
            parts.append(self.footer)
        return "\n\n".join(parts)

    @property
    def html(self) -> str:
        """The HTML body of an email; every value is escaped."""
        e = html.escape
        body = [f'<h2 style="font-size:16px;margin:0 0 12px">{e(self.headline)}</h2>']
        for block in self.blocks:
            body.append(_block_html(block))
        if self.facts:
            rows = "".join(
                f'<tr><th align="left" style="padding:2px 16px 2px 0;color:#555;font-weight:600">'
                f"{e(label)}</th><td>{e(value)}</td></tr>"
                for label, value in self.facts
            )
            body.append(f'<table style="border-collapse:collapse;margin:12px 0">{rows}</table>')
        if self.actions:
            buttons = "".join(
                f'<a href="{e(action.url)}" style="display:inline-block;margin:0 8px 8px 0;padding:8px 16px;'
                f'background:{"#1d4ed8" if index == 0 else "#4b5563"};color:#ffffff;border-radius:4px;'
                f'text-decoration:none;font-weight:600">{e(action.label)}</a>'
                for index, action in enumerate(self.actions))
            body.append(f'<p style="margin:16px 0">{buttons}</p>')
        if self.link is not None:
            body.append(f'<p><a href="{e(self.link.url)}">{e(self.link.label)}</a></p>')
        if self.footer:
            body.append(f'<p style="color:#777;font-size:12px">{e(self.footer)}</p>')
        return (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            f"<title>{e(self.subject)}</title></head>\n"
            '<body style="font-family:-apple-system,\'Segoe UI\',Helvetica,Arial,sans-serif;'
            'font-size:14px;line-height:1.5;color:#1d1d1f">\n'
            + "\n".join(body)
            + "\n</body></html>\n"
        )


def _block_text(block: Block) -> str:
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Link):
        return f"{block.label}: {block.url}"
    return block


def _block_html(block: Block) -> str:
    e = html.escape
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Link):
        return f'<p><a href="{e(block.url)}">{e(block.label)}</a></p>'
    return "<p>" + e(block).replace("\n", "<br>\n") + "</p>"


# -- values -----------------------------------------------------------------


def format_time(value: Any, timezone: str = "UTC") -> str:
    """``2026-11-27T13:00:00Z`` in Europe/Berlin -> ``Fri 27 Nov 2026, 14:00 CET``."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return one_line(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(_zone(timezone))
    return (
        f"{_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} {local.year}, "
        f"{local:%H:%M} {local.tzname()}"
    )


def _zone(name: str) -> ZoneInfo:
    # The intake validates customer time zones; an unknown one here still gets a
    # correct (UTC, and labelled so) time rather than no message at all.
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def format_window(value: Any) -> str:
    """``7d`` -> ``7 days``; anything else is shown as given."""
    if value is None or value == "":
        return MISSING
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", str(value))
    if not match:
        return one_line(str(value))
    count, unit = int(match.group(1)), _UNIT_WORDS[match.group(2)]
    return f"{count} {unit}{'' if count == 1 else 's'}"


_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(value: str) -> str:
    """Multi-line text with ``\n`` line ends and no other control characters but tabs."""
    text = value.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    return _CONTROLS.sub("", text)


def _text(value: Any, *, multiline: bool = False) -> str:
    """A value as display text: one line unless ``multiline``; "—" when missing or blank.

    The intake refuses control characters in single-line fields; runs started before it did,
    and contexts built elsewhere, still render as one line here.
    """
    if value is None:
        return MISSING
    text = clean_text(str(value)).strip() if multiline else one_line(str(value))
    return text or MISSING


@dataclass
class Values:
    """Read access to an intent's context; missing optional values read as "—"."""

    context: Mapping[str, Any]
    audience: str
    escalation: Mapping[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        escalation = self.context.get("escalation")
        if not isinstance(escalation, Mapping):
            raise ValueError(
                "notification context has no 'escalation' mapping; the workflow must put the "
                "escalation summary into every intent's context"
            )
        self.escalation = escalation

    # raw access
    def raw(self, *path: str) -> Any:
        node: Any = self.context
        for part in path:
            if not isinstance(node, Mapping):
                return None
            node = node.get(part)
        return node

    def esc(self, *path: str) -> Any:
        return self.raw("escalation", *path)

    def has(self, *path: str) -> bool:
        value = self.raw(*path)
        return value is not None and str(value).strip() != ""

    @property
    def timezone(self) -> str:
        if self.audience != "customer":
            return "UTC"
        return str(self.esc("customer", "timezone") or "UTC")

    def time(self, value: Any) -> str:
        return format_time(value, self.timezone)

    # escalation fields
    @property
    def ticket(self) -> str:
        return _text(self.esc("ticket_id"))

    @property
    def title(self) -> str:
        return _text(self.esc("title"))

    @property
    def priority(self) -> str:
        return _text(self.esc("priority"))

    @property
    def kind(self) -> str:
        return _text(self.esc("kind"))

    @property
    def kind_word(self) -> str:
        return _KIND_WORDS.get(str(self.esc("kind")), "new")

    @property
    def customer(self) -> str:
        return _text(self.esc("customer", "name") or self.esc("customer", "id"))

    @property
    def customer_line(self) -> str:
        details = [
            _text(v) for v in (self.esc("customer", "id"), self.esc("customer", "segment")) if v
        ]
        return f"{self.customer} ({', '.join(details)})" if details else self.customer

    @property
    def level_name(self) -> str:
        return _text(self.esc("level_name") or self.esc("level"))

    @property
    def owner(self) -> str:
        return _text(self.esc("owner"))

    @property
    def team(self) -> str:
        """The team the customer hears about: "our Engineering team", never "team team"."""
        name = _text(self.raw("team_name") or self.raw("to_level_name") or self.level_name)
        return re.sub(r"\s+team$", "", name, flags=re.IGNORECASE)

    @property
    def impact(self) -> str:
        users = self.esc("impact", "users_affected")
        parts = []
        if users is not None:
            parts.append(f"{users} user{'' if users == 1 else 's'} affected")
        if self.esc("impact", "critical"):
            parts.append("critical")
        if self.esc("impact", "description"):
            parts.append(_text(self.esc("impact", "description")))
        return ", ".join(parts) if parts else MISSING

    def deadline(self, name: str) -> str:
        return self.time(self.esc("deadlines", name))

    @property
    def next_deadline(self) -> str:
        """The earliest open deadline with its meaning, e.g. "Acknowledge by Fri ..."."""
        found: list[tuple[datetime, str, Any]] = []
        for key, label in _DEADLINES:
            value = self.esc("deadlines", key)
            if not value:
                continue
            try:
                moment = datetime.fromisoformat(str(value))
            except ValueError:
                continue
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            found.append((moment, label, value))
        if not found:
            return MISSING
        _, label, value = min(found, key=lambda item: item[0])
        return f"{label} {self.time(value)}"

    @property
    def next_update_by(self) -> str:
        value = self.raw("next_update_by") or self.esc("deadlines", "next_customer_update_due")
        return self.time(value)

    @property
    def has_next_update(self) -> bool:
        return self.has("next_update_by") or self.has(
            "escalation", "deadlines", "next_customer_update_due"
        )

    # per-template keys
    def get(self, key: str, *, multiline: bool = False) -> str:
        return _text(self.raw(key), multiline=multiline)

    @property
    def n(self) -> str:
        return self.get("n")

    def resolution(self, key: str) -> Any:
        return self.raw("resolution", key)

    @property
    def preventive_actions(self) -> tuple[str, ...]:
        actions = self.resolution("preventive_actions") or []
        if isinstance(actions, str) or not isinstance(actions, Sequence):
            raise ValueError(f"resolution.preventive_actions is not a list: {type(actions).__name__}")
        items = tuple(_text(a) for a in actions if one_line(str(a)))
        return items or (MISSING,)


# -- the templates ----------------------------------------------------------

Spec = tuple[str, list[Block]]


def _tag(v: Values) -> str:
    return f"[{v.priority}]"


def _owned(v: Values) -> str:
    return f"{v.level_name} (owner: {v.owner})" if v.owner != MISSING else v.level_name


def _due(v: Values) -> Kept:
    return Kept(
        f"Acknowledge by {v.deadline('ack_due')}. "
        f"Resolution is due by {v.deadline('resolve_due')}."
    )


def _paging_note(v: Values) -> list[Block]:
    """Who was paged instead, when the level's people were not available (``paging_note``)."""
    return [f"Paging: {v.get('paging_note')}."] if v.has("paging_note") else []


def _who(v: Values) -> str:
    """``automatically`` or ``by Dana (via api:ops-bot)``: who moved the escalation."""
    if v.raw("auto") is True:
        return "automatically"
    via = f" (via {v.get('via')})" if v.has("via") else ""
    return f"by {v.get('by')}{via}"


def _escalation_opened(v: Values) -> Spec:
    blocks: list[Block] = [
        f"A {v.kind_word} {v.priority} escalation for {v.customer} is now with {_owned(v)}: "
        f"{v.title}.",
        _due(v),
        f"Impact: {v.impact}.",
    ]
    if v.has("reason"):
        blocks.append(Kept(f"Why it was escalated: {v.get('reason')}"))
    blocks.extend(_paging_note(v))
    return f"{_tag(v)} New escalation for {v.customer}: {v.title} ({v.ticket})", blocks


def _escalated(v: Values) -> Spec:
    to_level = _text(v.raw("to_level_name") or v.raw("to_level"))
    if v.has("from_level"):
        from_level = _text(v.raw("from_level_name") or v.raw("from_level"))
        moved = f"{v.ticket} for {v.customer} was escalated from {from_level} to {to_level} {_who(v)}."
    else:  # held since it opened: no move to tell
        moved = f"{v.ticket} for {v.customer} is now with {to_level}."
    blocks: list[Block] = [moved, Kept(f"Reason: {v.get('reason')}")]
    if v.has("held_note"):
        blocks.append(f"The page was {v.get('held_note')}.")
    blocks.extend(_paging_note(v))
    blocks.append(_due(v))
    return f"{_tag(v)} Escalated to {to_level}: {v.title} ({v.ticket})", blocks


def _ack_reminder(v: Values) -> Spec:
    was_due = v.time(v.raw("was_due")) if v.has("was_due") else v.deadline("ack_due")
    return (
        f"{_tag(v)} Not acknowledged yet: {v.title} ({v.ticket})",
        [
            f"Reminder {v.n}: {v.ticket} for {v.customer} is waiting at {v.level_name} and has not "
            "been acknowledged.",
            Kept(f"It was due by {was_due}. This is the last level of the escalation "
                 "chain: please acknowledge it now."),
            Kept(f"Next reminder: {v.deadline('ack_due')}."),
        ],
    )


def _consulted(v: Values) -> Spec:
    if v.has("by"):
        brought = f"{v.get('by')} brought you into the escalation {v.ticket} for {v.customer}"
    else:  # the policy consults this level from the start
        brought = f"You were brought into the escalation {v.ticket} for {v.customer} automatically"
    return (
        f"{_tag(v)} Your input is needed: {v.title} ({v.ticket})",
        [
            f"{brought}, which is with {_owned(v)}.",
            Kept(f"Reason: {v.get('reason')}"),
            Kept(f"Resolution is due by {v.deadline('resolve_due')}."),
        ],
    )


def _sla_at_risk(v: Values) -> Spec:
    left = f" ({v.get('reason')})" if v.has("reason") else ""
    return (
        f"{_tag(v)} SLA at risk: {v.title} ({v.ticket})",
        [
            Kept(f"{v.ticket} for {v.customer} has used most of its resolution time{left}; it is due by "
                 f"{v.deadline('resolve_due')}."),
            f"It is with {_owned(v)}.",
        ],
    )


def _sla_breached(v: Values) -> Spec:
    why = f" ({v.get('reason')})" if v.has("reason") else ""
    return (
        f"{_tag(v)} SLA breached: {v.title} ({v.ticket})",
        [
            Kept(f"{v.ticket} for {v.customer} missed its resolution deadline of "
                 f"{v.deadline('resolve_due')}{why}."),
            f"It is still with {_owned(v)}. Please step in.",
        ],
    )


def _customer_update_due(v: Values) -> Spec:
    return (
        f"{_tag(v)} Automatic customer update sent: {v.title} ({v.ticket})",
        [
            f"No customer-visible note was added in time, so {v.customer} received automatic "
            f"status update {v.n}.",
            Kept(f"Their next update is due by {v.next_update_by}. Add a customer-visible note to tell "
                 "them more."),
        ],
    )


def _note_added(v: Values) -> Spec:
    return (
        f"{_tag(v)} New note on {v.ticket}: {v.title}",
        [f"{v.get('by')} added a note:", v.get("text", multiline=True)],
    )


def _next_update(v: Values) -> list[Block]:
    return [Kept(f"Next update by {v.next_update_by}.")] if v.has_next_update else []


def _customer_escalated(v: Values) -> Spec:
    return (
        f"Your request {v.ticket} has been escalated",
        [
            f"We've escalated this to our {v.team} team. They are now working on \"{v.title}\".",
            *_next_update(v),
        ],
    )


def _customer_update(v: Values) -> Spec:
    first = (
        v.get("text", multiline=True) if v.has("text")
        else f"Our {v.team} team is still working on \"{v.title}\"."
    )
    return f"Update on your request {v.ticket}", [first, *_next_update(v)]


def _customer_resolved(v: Values) -> Spec:
    return (
        f"Resolved: your request {v.ticket}",
        [
            f"We've resolved \"{v.title}\".",
            f"Root cause: {_text(v.resolution('root_cause'), multiline=True)}",
            f"What we did: {_text(v.resolution('mitigation'), multiline=True)}",
            "What we are doing so that it does not happen again:",
            Bullets(v.preventive_actions),
        ],
    )


def _csat_request(v: Values) -> Spec:
    rate = link("Rate us", v.raw("csat_url"))
    blocks: list[Block] = [
        f"How did we handle \"{v.title}\"? Please rate us from 1 (poor) to 5 (excellent)."
    ]
    if rate is not None:
        blocks.append(rate)
    else:
        blocks.append("Just reply to this message with a number from 1 to 5.")
    blocks.append(f"You can rate us for {format_window(v.raw('csat_window'))} after the resolution.")
    return f"How did we do with {v.ticket}?", blocks


def _postmortem_assigned(v: Values) -> Spec:
    due = v.time(v.raw("postmortem_due"))
    blocks: list[Block] = [
        Kept(f"{v.ticket} for {v.customer} is resolved. Please write its postmortem by {due}: root "
             "cause, improvements and a knowledge-base article."),
    ]
    if v.resolution("root_cause"):
        blocks.append(f"Root cause given at resolution: {_text(v.resolution('root_cause'), multiline=True)}")
    return f"{_tag(v)} Postmortem due {due}: {v.title} ({v.ticket})", blocks


def _postmortem_reminder(v: Values) -> Spec:
    due = v.time(v.raw("postmortem_due"))
    return (
        f"{_tag(v)} Reminder {v.n}: postmortem for {v.ticket} due {due}",
        [Kept(f"The postmortem for {v.ticket} ({v.title}) is still open; it is due by {due}.")],
    )


def _postmortem_overdue(v: Values) -> Spec:
    due = v.time(v.raw("postmortem_due"))
    return (
        f"{_tag(v)} Postmortem overdue: {v.title} ({v.ticket})",
        [
            Kept(f"The postmortem for {v.ticket} for {v.customer} was due by {due} and is still open."),
            f"It belongs to {_owned(v)}.",
        ],
    )


TEMPLATES: dict[str, Callable[[Values], Spec]] = {
    "escalation_opened": _escalation_opened,
    "escalated": _escalated,
    "ack_reminder": _ack_reminder,
    "consulted": _consulted,
    "sla_at_risk": _sla_at_risk,
    "sla_breached": _sla_breached,
    "customer_update_due": _customer_update_due,
    "note_added": _note_added,
    "customer_escalated": _customer_escalated,
    "customer_update": _customer_update,
    "customer_resolved": _customer_resolved,
    "csat_request": _csat_request,
    "postmortem_assigned": _postmortem_assigned,
    "postmortem_reminder": _postmortem_reminder,
    "postmortem_overdue": _postmortem_overdue,
}


def render(
    template: str,
    context: Mapping[str, Any],
    audience: str,
    *,
    workflow_url: str | None = None,
    actions: Sequence[Action] = (),
) -> Rendered:
    """The message for one intent. Customers get no internal facts, no UI link and no actions.

    The link to the run in Temporal UI is only made when ``workflow_url`` is safe
    (``ESCALATION_UI_URL`` on ``https:``); an action link when ``action_url_ok``.
    """
    try:
        build = TEMPLATES[template]
    except KeyError:
        raise ValueError(f"unknown notification template {template!r}") from None
    v = Values(context, audience)
    subject, blocks = build(v)
    subject = one_line(subject)
    internal = audience != "customer"
    if internal:
        return Rendered(
            template=template,
            audience=audience,
            subject=subject,
            headline=one_line(f"{_tag(v)} {v.title}"),
            blocks=tuple(blocks),
            facts=internal_facts(v),
            link=link(OPEN_IN_UI, workflow_url),
            footer=f"Ticket {v.ticket} · {v.customer}",
            actions=tuple(action for action in actions if action_url_ok(action.url)),
        )
    return Rendered(
        template=template,
        audience=audience,
        subject=subject,
        headline=subject,
        blocks=tuple(blocks),
        footer=f"Reference: {v.ticket}",
        internal=False,
    )


def internal_facts(v: Values) -> tuple[tuple[str, str], ...]:
    return (
        ("Priority", v.priority),
        ("Customer", v.customer),
        ("Level", v.level_name),
        ("Deadline", v.next_deadline),
    )


# -- Jira -------------------------------------------------------------------


def jira_summary(context: Mapping[str, Any]) -> str:
    """``[P1] <title>``, one line, at most 255 characters as Jira (Java) counts them: UTF-16 units."""
    v = Values(context, "owner")
    [summary] = fit([one_line(f"{_tag(v)} {v.title}")], lambda texts: utf16_units(texts[0]), JIRA_SUMMARY_LIMIT)
    return summary


def jira_labels(context: Mapping[str, Any]) -> list[str]:
    v = Values(context, "owner")
    labels = [v.priority] if v.priority != MISSING else []
    return [*labels, "escalation"]


def handoff_sections(context: Mapping[str, Any]) -> list[Section]:
    """What engineering needs from support at the handoff (the blog's step 3)."""
    v = Values(context, "owner")
    handoff = lambda key: _text(v.esc("handoff", key), multiline=True)  # noqa: E731
    return [
        Section("Customer", v.customer_line),
        Section("Impact", v.impact),
        Section("Ticket history", handoff("ticket_history")),
        Section("Error logs", handoff("error_logs"), code=v.esc("handoff", "error_logs") is not None),
        Section("Integration ID", _text(v.esc("handoff", "integration_id"))),
        Section("Steps to reproduce", handoff("steps_to_reproduce")),
    ]


def template_ids() -> Sequence[str]:
    return tuple(TEMPLATES)


# -- fitting a channel's limits ------------------------------------------------

JIRA_SUMMARY_LIMIT = 255
ELLIPSIS = "…"


def cut(text: str, length: int) -> str:
    """``text`` in at most ``length`` characters, ending in "…" if anything was dropped."""
    if len(text) <= length:
        return text
    if length <= 1:
        return ELLIPSIS[:length]
    return text[: length - 1].rstrip() + ELLIPSIS


def utf16_units(text: str) -> int:
    """The length Slack counts: UTF-16 code units (a character outside the BMP counts two)."""
    return len(text.encode("utf-16-le")) // 2


def fit(texts: Sequence[str], measure: Callable[[list[str]], int], limit: int, *,
        kept: Collection[int] = (), shortest: int = 1) -> list[str]:
    """``texts``, the longest shortened first, until ``measure(texts) <= limit``.

    ``measure`` is the channel's own count of what it sends (UTF-16 units of a Slack text,
    bytes of a Teams POST, characters of a Jira document), so escaping and encoding are
    counted as the vendor counts them. The long texts are cut to one common length, the
    greatest that fits, so the short ones stay whole. Texts whose index is in ``kept``
    (deadline and reason lines) are cut only once nothing else can give way; no text goes
    below ``shortest`` characters. Raises ``ValueError`` if that is still too long.
    """
    texts = list(texts)
    while measure(texts) > limit:
        movable = {i for i in range(len(texts)) if len(texts[i]) > shortest}
        candidates = (movable - set(kept)) or movable
        if not candidates:
            raise ValueError(f"the message does not fit in {limit} even with every text shortened")

        def at(length: int) -> list[str]:
            return [cut(text, length) if i in candidates else text for i, text in enumerate(texts)]

        if measure(at(shortest)) > limit:
            texts = at(shortest)  # not enough: the kept texts give way next
            continue
        low, high = shortest, max(len(texts[i]) for i in candidates) - 1  # the greatest length that fits
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if measure(at(middle)) <= limit else (low, middle - 1)
        texts = at(low)
    return texts
