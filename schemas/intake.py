"""Ticket intake from Freshdesk and Intercom webhooks: their shapes and how they map to a ``Ticket``.

Zendesk's adapter lives beside ``Ticket`` in ``schemas/ticket.py``; these two are here because
Freshdesk's placeholder times need a date parser the workflows (which import ``schemas.ticket``)
have no use for. Everything is pure: the helpdesk time zone and the time a delivery arrived
are passed in, and the routes (``escalations/api/tickets.py``) verify the senders.

- Freshdesk sends what the admin's automation rule says: the JSON body documented in
  docs/sweep.md, filled in from Freshdesk placeholders. Every value may arrive as text, an empty
  string (a placeholder with no value) or, if the placeholder is unknown, the placeholder itself;
  both of the last two count as absent.
- Intercom sends a notification ``{"type": "notification_event", "topic", "data": {"item"}}``
  whose item is the whole conversation or ticket: each one is a snapshot ordered by the item's
  ``updated_at``.

A mapping that cannot be made raises ``MappingError`` with field errors located in the body;
the ``Ticket`` built at the end raises pydantic's ``ValidationError`` like any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from html.parser import HTMLParser
from typing import Annotated, Any, Literal

from dateutil import parser as dateparser
from dateutil import tz as datetz
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.policy import Priority
from schemas.text import reject_nul
from schemas.ticket import Ticket

FRESHDESK_ID_PREFIX = "FD-"
INTERCOM_ID_PREFIX = "IC-"
MAX_TEXT = 100_000


class MappingError(ValueError):
    """The payload validated but does not map to a ticket; ``errors`` are ``{loc, msg, type}``."""

    def __init__(self, errors: Sequence[Mapping[str, Any]]) -> None:
        self.errors = [dict(error) for error in errors]
        super().__init__("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in self.errors))


def _error(loc: Sequence[str | int], msg: str) -> MappingError:
    return MappingError([{"loc": list(loc), "msg": msg, "type": "value_error"}])


class Lenient(BaseModel):
    """The tools send many more fields than we map; unknown ones are ignored."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        return reject_nul(value)


def attribute(attributes: Mapping[str, Any] | None, name: str) -> Any:
    """A custom attribute by name, ignoring case and spaces: ``Users affected`` is ``users_affected``."""
    for key, value in (attributes or {}).items():
        if re.sub(r"[^a-z0-9]+", "_", str(key).lower()).strip("_") == name and value not in (None, ""):
            return value
    return None


class _Text(HTMLParser):
    BLOCKS = frozenset({"p", "div", "br", "li", "ul", "ol", "tr", "h1", "h2", "h3", "h4", "pre", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_text(html: str | None) -> str | None:
    """Intercom bodies are HTML: their text, one line per block, or None when there is none."""
    if not html:
        return None
    reader = _Text()
    reader.feed(html)
    reader.close()
    lines = (" ".join(line.split()) for line in "".join(reader.parts).splitlines())
    text = "\n".join(line for line in lines if line)
    return text[:MAX_TEXT] or None


def _first_line(text: str | None, limit: int = 120) -> str | None:
    if not text:
        return None
    line = text.strip().splitlines()[0].strip()
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


# -- Freshdesk ----------------------------------------------------------------------------

# Freshdesk's clock and ours may disagree by a little; more than this is a wrong time zone.
CLOCK_SKEW = timedelta(minutes=5)
_PLACEHOLDER = re.compile(r"^\{\{.*\}\}$", re.DOTALL)


def _absent(value: Any) -> Any:
    """A placeholder with no value renders as ``""``; one Freshdesk does not know may stay as is."""
    if isinstance(value, str) and (not value.strip() or _PLACEHOLDER.match(value.strip())):
        return None
    if isinstance(value, dict):
        return {key: _absent(item) for key, item in value.items()}
    return value


class Rendered(Lenient):
    """A body filled in from placeholders: empty or unrendered values are absent."""

    @model_validator(mode="before")
    @classmethod
    def _drop_absent(cls, data: Any) -> Any:
        return _absent(data) if isinstance(data, dict) else data


FRESHDESK_PRIORITIES: dict[str, Priority] = {
    "urgent": "P1", "high": "P2", "medium": "P3", "low": "P4", "4": "P1", "3": "P2", "2": "P3", "1": "P4",
}
# Freshdesk's built-in statuses (2-5); new accounts also have these two custom ones. Any other
# custom status is unresolved in Freshdesk (only Resolved and Closed end a ticket): open here.
FRESHDESK_STATUSES: dict[str, str] = {
    "open": "open", "pending": "pending", "resolved": "solved", "closed": "closed",
    "2": "open", "3": "pending", "4": "solved", "5": "closed",
    "waiting on customer": "pending", "waiting on third party": "hold",
}


class FreshdeskPerson(Rendered):
    name: Annotated[str, Field(max_length=200)] | None = None
    email: Annotated[str, Field(max_length=254)] | None = None


class FreshdeskCompany(Rendered):
    name: Annotated[str, Field(max_length=200)] | None = None
    segment: Annotated[str, Field(max_length=64)] | None = None


class FreshdeskTicket(Rendered):
    id: Annotated[int, Field(gt=0)]
    subject: Annotated[str, Field(max_length=1000)]
    status: str
    created_at: str
    updated_at: str | None = None
    priority: Priority | None = None
    description: str | None = None
    type: Annotated[str, Field(max_length=100)] | None = None
    category: Annotated[str, Field(max_length=100)] | None = None
    tags: list[str] | str | None = None
    due_by: str | None = None
    requester: FreshdeskPerson | None = None
    company: FreshdeskCompany | None = None
    users_affected: Annotated[int, Field(ge=0)] | None = None
    interactions: Annotated[int, Field(ge=0)] | None = None
    integration_id: Annotated[str, Field(max_length=200)] | None = None

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        if value is None:
            return None
        mapped = FRESHDESK_PRIORITIES.get(str(value).strip().lower())
        if mapped is None:
            raise ValueError(f"{value!r} is not a Freshdesk priority: use Low, Medium, High or Urgent (or 1-4)")
        return mapped

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        text = str(value).strip().lower() if value is not None else ""
        if text in FRESHDESK_STATUSES:
            return FRESHDESK_STATUSES[text]
        if text.isdigit():
            if int(text) >= 6:  # a custom status's id
                return "open"
            raise ValueError(f"{value!r} is not a Freshdesk status: statuses are 2-5 (Open, Pending, Resolved, "
                             "Closed) and custom ones from 6")
        if not text:
            raise ValueError("the status is missing (the placeholder {{ticket.status}} rendered nothing)")
        return "open"


class FreshdeskWebhook(Rendered):
    """``{"ticket": {...}}``: the body of the automation rule's "Trigger webhook" action (docs/sweep.md)."""

    ticket: FreshdeskTicket


_ZONE_NAME = re.compile(r"\s+([A-Z][A-Za-z]{1,5})$")
_UTC_NAMES = frozenset({"UTC", "GMT", "Z"})
_MERIDIEM = frozenset({"AM", "PM"})


def parse_freshdesk_time(text: str, zone: tzinfo) -> datetime:
    """A time as a Freshdesk placeholder renders it, in UTC.

    Freshdesk renders times in the helpdesk's time zone: ``{{ticket.created_on}}`` as
    ``2026-11-27 14:30:00 +0530`` (or ``… UTC``), ``{{ticket.due_by_time}}`` as
    ``November 27 2026 at 01:00 PM IST``. A time without an offset is ``zone``'s; a zone named
    by its abbreviation must be ``zone``'s at that time (``IST`` alone could be India's,
    Israel's or Ireland's). ISO 8601 works too. All-numeric dates such as ``11/03/2026`` are
    refused: whether the day or the month comes first is a helpdesk setting.
    """
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = _written_time(value, text, zone)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(timezone.utc)


def _written_time(value: str, text: str, zone: tzinfo) -> datetime:
    named = _ZONE_NAME.search(value)
    abbreviation = None
    if named is not None and named.group(1).upper() not in _MERIDIEM:
        abbreviation, value = named.group(1), value[: named.start()]
    if not (re.match(r"\d{4}-\d{2}-\d{2}", value) or (re.search(r"[A-Za-z]{3}", value)
                                                        and re.search(r"\b\d{4}\b", value))):
        raise ValueError(f"{text!r} is not a time: use ISO 8601 (2026-11-27T09:00:00Z) or a date with the "
                         "month's name and the year (November 27 2026 at 01:00 PM)")
    try:
        parsed = dateparser.parse(value)
    except (ValueError, OverflowError) as err:
        raise ValueError(f"{text!r} is not a time ({err})") from None
    if isinstance(parsed.tzinfo, datetz.tzlocal):  # dateutil read a zone name as this machine's own
        raise ValueError(f"{text!r} names a time zone by abbreviation; send an offset (+05:30) or none")
    if abbreviation is None or parsed.tzinfo is not None:
        return parsed
    if abbreviation.upper() in _UTC_NAMES:
        return parsed.replace(tzinfo=timezone.utc)
    local = parsed.replace(tzinfo=zone)
    if local.tzname() != abbreviation:
        raise ValueError(f"{text!r} is in {abbreviation}, but ESCALATION_FRESHDESK_TIMEZONE ({zone}) calls that "
                         f"time {local.tzname()}: set it to the helpdesk's time zone")
    return local


def _name_key(name: str) -> str:
    """``Acme Corp`` → ``acme-corp``; letters of any script are kept (``株式会社サンプル`` stays itself)."""
    return re.sub(r"[\W_]+", "-", name.strip().lower()).strip("-")[:200] or name.strip()[:200]


def _tags(value: list[str] | str | None) -> list[str]:
    items = value.split(",") if isinstance(value, str) else (value or [])
    return [tag.strip()[:100] for tag in items if tag and tag.strip()][:100]


def from_freshdesk(webhook: FreshdeskWebhook, zone: tzinfo, received_at: datetime) -> Ticket:
    """Map a Freshdesk delivery to a ticket; ``received_at`` stands in for a missing ``updated_at``.

    Raises ``MappingError`` (located in the body) or pydantic's ``ValidationError``.
    """
    fd = webhook.ticket
    times: dict[str, datetime | None] = {}
    errors: list[dict[str, Any]] = []
    for field in ("created_at", "updated_at", "due_by"):
        raw = getattr(fd, field)
        try:
            times[field] = parse_freshdesk_time(raw, zone) if raw is not None else None
        except ValueError as err:
            errors.append({"loc": ["body", "ticket", field], "msg": str(err), "type": "value_error"})
    created = times.get("created_at")
    if created is not None and created > received_at + CLOCK_SKEW and fd.updated_at is None:
        errors.append({"loc": ["body", "ticket", "created_at"], "type": "value_error", "msg": (
            f"{fd.created_at!r} read as {created.isoformat()} is later than now: is ESCALATION_FRESHDESK_TIMEZONE "
            "the helpdesk's time zone?")})
    if errors:
        raise MappingError(errors)

    company, requester = fd.company, fd.requester
    if company is not None and company.name:
        customer_id, customer_name = _name_key(company.name), company.name
    elif requester is not None and requester.email:
        customer_id, customer_name = requester.email.lower(), requester.name or requester.email
    else:
        customer_id, customer_name = "unknown", (requester.name if requester and requester.name else
                                                 "Unknown requester")
    document: dict[str, Any] = {
        "id": f"{FRESHDESK_ID_PREFIX}{fd.id}",
        "customer": {
            "id": customer_id,
            "name": customer_name,
            "segment": company.segment if company is not None else None,
            "email": requester.email if requester is not None else None,
        },
        "subject": fd.subject,
        "status": fd.status,
        "opened_at": created,
        "updated_at": times["updated_at"] or (max(received_at, created) if created else received_at),
        "category": fd.category or fd.type,
        "priority": fd.priority,
        "users_affected": fd.users_affected,
        "interactions": fd.interactions,
        "resolution_due": times["due_by"],
        "integration_id": fd.integration_id,
        "description": fd.description[:MAX_TEXT] if fd.description else None,
        "tags": _tags(fd.tags),
    }
    return Ticket.model_validate(document)


# -- Intercom -----------------------------------------------------------------------------

def _text_id(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# Ids are strings in Intercom's API; older payloads have numbers.
IntercomId = Annotated[str, BeforeValidator(_text_id), Field(min_length=1, max_length=90)]


class IntercomNotification(Lenient):
    """Intercom's webhook envelope; ``data.item`` is the conversation, ticket, contact, … of the topic."""

    type: Literal["notification_event"]
    topic: Annotated[str, Field(min_length=1, max_length=200)]
    id: str | None = None
    app_id: str | None = None
    created_at: int | None = None
    data: IntercomData


class IntercomData(Lenient):
    item: dict[str, Any]


IntercomNotification.model_rebuild()


class IntercomCompany(Lenient):
    id: IntercomId | None = None
    company_id: IntercomId | None = None
    name: str | None = None
    plan: dict[str, Any] | None = None
    custom_attributes: dict[str, Any] = Field(default_factory=dict)


class IntercomContact(Lenient):
    id: IntercomId
    external_id: IntercomId | None = None
    name: str | None = None
    email: str | None = None


class IntercomContacts(Lenient):
    contacts: list[IntercomContact] = Field(default_factory=list)


class IntercomAuthor(Lenient):
    type: str | None = None
    name: str | None = None


class IntercomPart(Lenient):
    body: str | None = None
    created_at: AwareDatetime | None = None
    author: IntercomAuthor | None = None


class IntercomSource(Lenient):
    subject: str | None = None
    body: str | None = None


class IntercomTag(Lenient):
    name: str


class IntercomTags(Lenient):
    tags: list[IntercomTag] = Field(default_factory=list)


class IntercomStatistics(Lenient):
    count_conversation_parts: int | None = None


class IntercomParts(Lenient):
    total_count: int | None = None
    conversation_parts: list[IntercomPart] | None = None
    ticket_parts: list[IntercomPart] | None = None


class IntercomItem(Lenient):
    id: IntercomId
    created_at: AwareDatetime
    updated_at: AwareDatetime
    open: bool | None = None
    priority: str | None = None
    contacts: IntercomContacts | None = None
    company: IntercomCompany | None = None
    tags: IntercomTags | None = None


class IntercomConversation(IntercomItem):
    type: Literal["conversation"]
    title: str | None = None
    state: str | None = None
    source: IntercomSource | None = None
    custom_attributes: dict[str, Any] = Field(default_factory=dict)
    statistics: IntercomStatistics | None = None
    conversation_parts: IntercomParts | None = None


class IntercomTicketState(Lenient):
    category: str


class IntercomTicketType(Lenient):
    name: str | None = None


class IntercomTicket(IntercomItem):
    type: Literal["ticket"]
    ticket_id: IntercomId | None = None
    ticket_attributes: dict[str, Any] = Field(default_factory=dict)
    # A string up to API 2.11, an object (custom states) since 2.12.
    ticket_state: str | IntercomTicketState
    ticket_type: IntercomTicketType | None = None
    ticket_parts: IntercomParts | None = None


# Conversations had a priority flag up to API 2.x; later versions have levels.
INTERCOM_PRIORITIES: dict[str, Priority | None] = {
    "priority": "P2", "not_priority": "P3", "urgent": "P1", "high": "P2", "medium": "P3", "low": "P4", "none": None,
}
INTERCOM_STATES: dict[str, str] = {"open": "open", "snoozed": "pending", "closed": "closed"}
INTERCOM_TICKET_STATES: dict[str, str] = {
    "submitted": "new", "in_progress": "open", "waiting_on_customer": "pending", "on_hold": "hold",
    "resolved": "solved",
}
ITEM = ("body", "data", "item")


class IntakeIgnored(BaseModel):
    """The answer to a notification that carries no ticket (nothing is stored)."""

    ignored: Literal[True] = True
    topic: str
    reason: str
    notification_id: str | None = None


def relevant(notification: IntercomNotification) -> str | None:
    """Why a notification carries no ticket (it is answered 2xx and logged), or None when it does."""
    kind = notification.data.item.get("type")
    if kind not in ("conversation", "ticket"):
        return f"topic {notification.topic} carries a {kind or 'typeless'} item, not a conversation or ticket"
    if notification.topic.endswith(".deleted"):
        return f"topic {notification.topic}: a deletion carries only ids; the stored ticket stays as it was"
    return None


def _history(parts: Sequence[IntercomPart] | None) -> str | None:
    lines = []
    for part in parts or ():
        text = html_text(part.body)
        if not text:
            continue
        when = f"{part.created_at.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC " if part.created_at else ""
        who = part.author.name or part.author.type if part.author else None
        lines.append(f"{when}{who + ': ' if who else ''}{text}")
    return "\n".join(lines)[:MAX_TEXT] or None


def _customer(item: IntercomItem) -> dict[str, Any]:
    company = item.company
    contact = item.contacts.contacts[0] if item.contacts and item.contacts.contacts else None
    if company is not None and (company.company_id or company.id):
        plan = (company.plan or {}).get("name")
        segment = attribute(company.custom_attributes, "segment") or plan
        return {"id": company.company_id or company.id, "name": company.name or f"Intercom company {company.id}",
                "segment": str(segment)[:64] if segment else None, "email": contact.email if contact else None}
    if contact is not None:
        return {"id": contact.external_id or contact.id, "name": contact.name or f"Intercom contact {contact.id}",
                "email": contact.email}
    return {"id": "unknown", "name": "Unknown contact"}


def from_intercom(notification: IntercomNotification) -> Ticket:
    """Map the conversation or ticket of a relevant notification (``relevant`` is None) to a ticket.

    Raises ``MappingError`` (located in the body) for an item that is not a conversation or
    ticket as Intercom documents them, or has a state or priority with no counterpart here;
    pydantic's ``ValidationError`` when the result is no valid ``Ticket``.
    """
    raw = notification.data.item
    item: IntercomConversation | IntercomTicket
    try:
        item = (IntercomTicket if raw.get("type") == "ticket" else IntercomConversation).model_validate(raw)
    except ValidationError as exc:
        raise MappingError([{"loc": [*ITEM, *error["loc"]], "msg": error["msg"], "type": error["type"]}
                            for error in exc.errors(include_url=False)]) from None
    if isinstance(item, IntercomTicket):
        state = item.ticket_state if isinstance(item.ticket_state, str) else item.ticket_state.category
        status = INTERCOM_TICKET_STATES.get(state)
        if status is None:
            raise _error([*ITEM, "ticket_state"], f"{state!r} is not an Intercom ticket state: "
                         f"{', '.join(INTERCOM_TICKET_STATES)}")
        if item.open is False and status != "solved":
            status = "closed"
        attributes = item.ticket_attributes
        description = html_text(str(attributes.get("_default_description_") or "")) or None
        subject = str(attributes.get("_default_title_") or "").strip() or _first_line(description)
        category = attribute(attributes, "category") or (item.ticket_type.name if item.ticket_type else None)
        parts = item.ticket_parts
        history = _history(parts.ticket_parts if parts else None)
        interactions = parts.total_count if parts else None
    else:
        state = item.state or ("open" if item.open else "closed" if item.open is False else None)
        status = INTERCOM_STATES.get(state or "")
        if status is None:
            raise _error([*ITEM, "state"], f"{state!r} is not an Intercom conversation state: open, snoozed, closed")
        attributes = item.custom_attributes
        description = html_text(item.source.body) if item.source else None
        source_subject = html_text(item.source.subject) if item.source else None
        subject = (item.title or "").strip() or source_subject or _first_line(description)
        category = attribute(attributes, "category")
        parts = item.conversation_parts
        history = _history(parts.conversation_parts if parts else None)
        interactions = (item.statistics.count_conversation_parts if item.statistics else None)
        if interactions is None and parts is not None:
            interactions = parts.total_count
    priority: Priority | None = None
    if item.priority is not None:
        if item.priority not in INTERCOM_PRIORITIES:
            raise _error([*ITEM, "priority"], f"{item.priority!r} is not an Intercom priority: "
                         f"{', '.join(INTERCOM_PRIORITIES)}")
        priority = INTERCOM_PRIORITIES[item.priority]
    integration = attribute(attributes, "integration_id")
    document: dict[str, Any] = {
        "id": f"{INTERCOM_ID_PREFIX}{item.id}",
        "customer": _customer(item),
        "subject": subject or f"Intercom {item.type} {item.id}",
        "status": status,
        "opened_at": item.created_at,
        "updated_at": item.updated_at,
        "category": str(category) if category is not None else None,
        "priority": priority,
        "users_affected": attribute(attributes, "users_affected"),
        "interactions": interactions,
        "integration_id": str(integration) if integration is not None else None,
        "description": description,
        "history": history,
        "tags": [tag.name for tag in item.tags.tags][:100] if item.tags else [],
    }
    return Ticket.model_validate(document)
