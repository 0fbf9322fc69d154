"""Tickets, the criteria sweep's input: our format, the Zendesk adapter, and the sweep messages.

``Ticket`` is the body of ``POST /tickets`` and one line of ``escalations tickets import``
(unknown keys are an error). ``ZendeskWebhook`` is the lenient shape ``POST /tickets/zendesk``
accepts (a Zendesk ticket as the API or a webhook template sends it); ``from_zendesk`` maps it
to a ``Ticket``. ``escalation_request_for`` is how the sweep turns a matched ticket into an
``EscalationRequest``. Everything here is pure, so workflows may import it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from schemas.escalation import (
    Customer,
    EscalationRequest,
    Handoff,
    Impact,
    PolicyName,
    TicketId,
    Trigger,
)
from schemas.policy import Kind, Priority
from schemas.text import one_line, reject_nul

TicketStatus = Literal["new", "open", "pending", "hold", "solved", "closed"]
DONE_STATUSES: tuple[str, ...] = ("solved", "closed")
DEFAULT_CATEGORY = "general"

# Activity names of the sweep (workflow modules refer to activities by name only).

LongText = Annotated[str, Field(max_length=100_000)]
MAX_COUNT = 1_000_000_000
"""The largest count a ticket carries (users affected, interactions): what ``Impact`` accepts."""


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(timezone.utc) if value is not None else None


class Ticket(BaseModel):
    """A support ticket as backend services send it (``POST /tickets``)."""

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        return reject_nul(value)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "T-7781",
                    "customer": {"id": "acme", "name": "Acme Corp", "segment": "enterprise"},
                    "subject": "Dashboard export failing",
                    "category": "technical",
                    "priority": "P2",
                    "status": "open",
                    "users_affected": 40,
                    "interactions": 3,
                    "opened_at": "2026-11-27T09:00:00Z",
                    "updated_at": "2026-11-27T10:30:00Z",
                    "first_response_due": None,
                    "resolution_due": "2026-11-28T09:00:00Z",
                    "integration_id": "exports",
                    "description": "Exports of the usage dashboard time out since the last release.",
                    "history": "09:00 customer reported; 09:40 tier 1 reproduced.",
                }
            ]
        },
    )

    id: TicketId
    customer: Customer
    subject: Annotated[str, Field(min_length=1, max_length=1000)]
    status: TicketStatus
    opened_at: AwareDatetime
    updated_at: AwareDatetime
    category: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    priority: Priority | None = None
    users_affected: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = None
    interactions: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = None
    first_response_due: AwareDatetime | None = None
    resolution_due: AwareDatetime | None = None
    integration_id: Annotated[str, Field(max_length=200)] | None = None
    description: LongText | None = None
    history: LongText | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=100
    )

    @field_validator("opened_at", "updated_at", "first_response_due", "resolution_due")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)

    @field_validator("subject")
    @classmethod
    def _subject_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("subject must not be blank")
        return value.strip()

    @model_validator(mode="after")
    def _times_in_order(self) -> "Ticket":
        if self.updated_at < self.opened_at:
            raise ValueError("updated_at must not be before opened_at")
        if self.resolution_due is not None and self.resolution_due <= self.opened_at:
            raise ValueError("resolution_due must be after opened_at (it ends the SLA window)")
        return self


UpsertOutcome = Literal["inserted", "updated", "unchanged", "stale"]


class TicketUpsertResult(BaseModel):
    """What storing one ticket did (the response of ``POST /tickets``)."""

    ticket_id: str
    outcome: UpsertOutcome
    updated_at: AwareDatetime = Field(description="updated_at of the version now stored")
    note: str | None = None


# -- the criteria sweep -----------------------------------------------------


class TicketFacts(BaseModel):
    """What the matcher needs of a ticket: a slim row of the candidate query."""

    id: str
    updated_at: AwareDatetime
    status: str
    opened_at: AwareDatetime
    category: str = DEFAULT_CATEGORY
    priority: Priority | None = None
    users_affected: int | None = None
    interactions: int | None = None
    resolution_due: AwareDatetime | None = None
    segment: str | None = None


MAX_SWEEP_TICKETS = 1000


class SweepInput(BaseModel):
    """Input of ``CriteriaSweepWorkflow`` (the schedule passes only ``policy``)."""

    policy: PolicyName | None = Field(default=None, description="policy name; None: the worker's default")
    page_size: int = Field(default=500, ge=1, le=5000)
    ticket_ids: list[TicketId] | None = Field(
        default=None, max_length=MAX_SWEEP_TICKETS,
        description="only these tickets (the demo's own sweep); None: every ticket (the schedule)",
    )
    # Carried across continue-as-new only:
    after_id: str = ""
    as_of: AwareDatetime | None = None
    carried: "SweepResult | None" = None


class CandidateQuery(BaseModel):
    after_id: str = ""
    limit: int = Field(ge=1, le=5000)
    ticket_ids: list[str] | None = Field(default=None, max_length=MAX_SWEEP_TICKETS,
                                         description="only these tickets; None: every ticket")


class CandidatePage(BaseModel):
    tickets: list[TicketFacts] = Field(default_factory=list)


class SweepMatch(BaseModel):
    """A ticket a rule matched, at the version (updated_at) the sweep saw."""

    ticket_id: str
    ticket_updated_at: AwareDatetime
    rule: str
    detail: str
    kind: Kind
    priority: Priority


class EscalateBatch(BaseModel):
    sweep_id: str
    policy: str
    matches: list[SweepMatch] = Field(min_length=1)


SkipReason = Literal[
    "already_running",  # Temporal: escalation-<ticket_id> is running (the final guard)
    "claimed",  # another sweep holds this ticket version and is starting it
    "escalated",  # another sweep already escalated this ticket version
    "open_escalation",  # the read model shows an open escalation (or one closed after the update)
    "changed",  # the ticket changed after the candidate query; the next sweep looks again
    "closed",  # the ticket was solved/closed after the candidate query
    "gone",  # the ticket row disappeared
    "unroutable",  # a functional rule, but the ticket's category has no route in the policy
    "invalid",  # the stored ticket no longer validates (as a Ticket, or as an EscalationRequest)
]


class TicketOutcome(BaseModel):
    ticket_id: str
    started: bool
    workflow_id: str
    run_id: str | None = None
    repeat: bool = False
    skipped: SkipReason | None = None
    message: str | None = None


class EscalateResult(BaseModel):
    outcomes: list[TicketOutcome] = Field(default_factory=list)


class SweepStarted(BaseModel):
    ticket_id: str
    workflow_id: str
    rule: str
    detail: str
    repeat: bool


class SweepSkipped(BaseModel):
    ticket_id: str
    rule: str
    reason: SkipReason
    message: str | None = None


MAX_LISTED = 100


class SweepResult(BaseModel):
    """The sweep's result (shown in Temporal UI as the run's result)."""

    policy: str
    policy_version: int
    as_of: AwareDatetime
    checked: int = 0
    matched: int = 0
    started: int = 0
    repeats: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = Field(default_factory=dict)
    pages: int = 0
    started_tickets: list[SweepStarted] = Field(default_factory=list)
    skipped_tickets: list[SweepSkipped] = Field(default_factory=list)
    note: str | None = None

    def add_started(self, entry: SweepStarted) -> None:
        self.started += 1
        self.repeats += 1 if entry.repeat else 0
        if len(self.started_tickets) < MAX_LISTED:
            self.started_tickets.append(entry)

    def add_skipped(self, entry: SweepSkipped) -> None:
        self.skipped += 1
        self.skipped_by_reason[entry.reason] = self.skipped_by_reason.get(entry.reason, 0) + 1
        if len(self.skipped_tickets) < MAX_LISTED:
            self.skipped_tickets.append(entry)


SweepInput.model_rebuild()


def claim_key(ticket_id: str, updated_at: datetime) -> str:
    """One escalation per ticket version: the memo value that marks a sweep's start."""
    return f"{ticket_id}@{updated_at.astimezone(timezone.utc).isoformat()}"


_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(value: str | None) -> str:
    """``"Billing & Invoices"`` → ``billing-invoices``; empty → ``general``."""
    slug = _NOT_SLUG.sub("-", (value or "").strip().lower()).strip("-")[:64].rstrip("-")
    return slug or DEFAULT_CATEGORY


def escalation_request_for(ticket: Ticket, match: SweepMatch, *, policy: str | None) -> EscalationRequest:
    """How the sweep opens an escalation for a matched ticket (see the README's mapping)."""
    return EscalationRequest(
        ticket_id=ticket.id,
        # A subject may hold line breaks (Zendesk's API accepts them); a title is one line.
        title=one_line(ticket.subject)[:300],
        customer=ticket.customer,
        category=slugify(ticket.category),
        kind=match.kind,
        priority=match.priority,
        impact=Impact(users_affected=ticket.users_affected or 0),
        handoff=Handoff(
            ticket_history=ticket.history,
            error_logs=None,
            integration_id=ticket.integration_id,
            steps_to_reproduce=ticket.description,
        ),
        policy=policy,
        trigger=Trigger(source="sweep", criterion=match.rule, detail=match.detail),
    )


# -- Zendesk ----------------------------------------------------------------


class Lenient(BaseModel):
    """Zendesk sends many more fields than we map; the unknown ones are ignored."""

    model_config = ConfigDict(extra="ignore")


ZendeskId = int | str


class ZendeskUser(Lenient):
    id: ZendeskId | None = None
    name: str | None = None
    email: str | None = None


class ZendeskOrganization(Lenient):
    id: ZendeskId | None = None
    name: str | None = None
    organization_fields: dict[str, Any] = Field(default_factory=dict)


class ZendeskCustomField(Lenient):
    id: ZendeskId | None = None
    name: str | None = None
    value: Any = None


class ZendeskComment(Lenient):
    body: str | None = None
    plain_body: str | None = None
    author_id: ZendeskId | None = None
    created_at: AwareDatetime | None = None
    public: bool | None = None


class ZendeskTicket(Lenient):
    id: ZendeskId
    subject: str
    status: str
    created_at: AwareDatetime
    updated_at: AwareDatetime
    description: str | None = None
    priority: str | None = None
    type: str | None = None
    due_at: AwareDatetime | None = None
    requester: ZendeskUser | None = None
    requester_id: ZendeskId | None = None
    organization: ZendeskOrganization | None = None
    organization_id: ZendeskId | None = None
    tags: list[str] = Field(default_factory=list)
    custom_fields: list[ZendeskCustomField] = Field(default_factory=list)
    comment_count: int | None = None
    comments: list[ZendeskComment] | None = None


class ZendeskWebhook(Lenient):
    """``{"ticket": {...}}``: Zendesk's ticket JSON (API shape, or a webhook template's)."""

    ticket: ZendeskTicket


ZENDESK_PRIORITIES: dict[str, Priority] = {"urgent": "P1", "high": "P2", "normal": "P3", "low": "P4"}
ZENDESK_STATUSES: dict[str, str] = {
    "new": "new", "open": "open", "pending": "pending", "hold": "hold", "on-hold": "hold",
    "on_hold": "hold", "solved": "solved", "closed": "closed", "deleted": "closed",
}
# Our ticket fields that can come from Zendesk custom fields (by name, or by id via a field map).
ZENDESK_CUSTOM_FIELDS = ("users_affected", "integration_id", "category", "segment")
ZENDESK_ID_PREFIX = "ZD-"


def parse_zendesk_field_map(text: str | None) -> dict[str, str]:
    """``users_affected=360001,integration_id=360002`` → {"360001": "users_affected", ...}."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, field_id = part.partition("=")
        name, field_id = name.strip(), field_id.strip()
        if not sep or not field_id or name not in ZENDESK_CUSTOM_FIELDS:
            raise ValueError(
                f"zendesk field map entry {part.strip()!r}: use NAME=FIELD_ID with NAME one of "
                f"{', '.join(ZENDESK_CUSTOM_FIELDS)}"
            )
        mapping[field_id] = name
    return mapping


def _custom_fields(ticket: ZendeskTicket, field_ids: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for entry in ticket.custom_fields:
        name = field_ids.get(str(entry.id)) if entry.id is not None else None
        if name is None and entry.name in ZENDESK_CUSTOM_FIELDS:
            name = entry.name
        if name is not None and entry.value not in (None, ""):
            found[name] = entry.value
    return found


def _history(comments: list[ZendeskComment] | None) -> str | None:
    if not comments:
        return None
    lines = []
    for comment in comments:
        text = (comment.plain_body or comment.body or "").strip()
        if not text:
            continue
        when = f"{comment.created_at.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC " if comment.created_at else ""
        who = f"{comment.author_id}: " if comment.author_id is not None else ""
        lines.append(f"{when}{who}{text}")
    return "\n".join(lines)[:100_000] or None


def from_zendesk(webhook: ZendeskWebhook, field_ids: Mapping[str, str] | None = None) -> Ticket:
    """Map a Zendesk ticket to ours; raises pydantic.ValidationError if the result is invalid."""
    zd = webhook.ticket
    custom = _custom_fields(zd, field_ids or {})
    org, requester = zd.organization, zd.requester
    if org is not None and org.id is not None:
        customer_id, customer_name = str(org.id), org.name or f"Zendesk organization {org.id}"
    elif zd.organization_id is not None:
        customer_id, customer_name = str(zd.organization_id), f"Zendesk organization {zd.organization_id}"
    else:
        requester_id = requester.id if requester and requester.id is not None else zd.requester_id
        customer_id = str(requester_id) if requester_id is not None else "unknown"
        customer_name = (requester.name if requester and requester.name else None) or (
            f"Zendesk requester {requester_id}" if requester_id is not None else "Unknown requester"
        )
    segment = custom.get("segment") or (org.organization_fields.get("segment") if org else None)
    status = zd.status.strip().lower()
    priority = zd.priority.strip().lower() if zd.priority else None
    interactions = zd.comment_count if zd.comment_count is not None else (
        len(zd.comments) if zd.comments is not None else None
    )
    document: dict[str, Any] = {
        "id": f"{ZENDESK_ID_PREFIX}{zd.id}",
        "customer": {
            "id": customer_id,
            "name": customer_name,
            "segment": str(segment) if segment not in (None, "") else None,
            "email": (requester.email or None) if requester else None,
        },
        "subject": zd.subject,
        "status": ZENDESK_STATUSES.get(status, status),
        "opened_at": zd.created_at,
        "updated_at": zd.updated_at,
        "category": custom.get("category") or zd.type,
        "priority": ZENDESK_PRIORITIES.get(priority, priority) if priority else None,
        "users_affected": custom.get("users_affected"),
        "interactions": interactions,
        "resolution_due": zd.due_at,
        "integration_id": str(custom["integration_id"]) if "integration_id" in custom else None,
        "description": zd.description,
        "history": _history(zd.comments),
        "tags": zd.tags,
    }
    return Ticket.model_validate(document)
