"""Requests, commands and state of an escalation: the workflow's and the API's language."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from schemas.keys import WORKFLOW_TASK_TIMEOUT
from schemas.policy import ContactPoint, Kind, Policy, Priority
from schemas.text import ONE_LINE, reject_nul

Status = Literal["open", "acknowledged", "paused", "resolved", "closed", "failed", "terminated"]
TriggerSource = Literal["api", "cli", "sweep", "client"]
# Single-line fields (shown in subjects, headers and chat titles) refuse control characters
# (CR, LF, other C0/C1); multi-line ones (notes, logs, root causes) keep their newlines.
Name = Annotated[str, Field(min_length=1, max_length=200), ONE_LINE]
# Ticket ids, and any value a visibility query quotes: safe inside a single-quoted literal.
TICKET_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
TicketId = Annotated[str, Field(pattern=TICKET_ID_PATTERN)]
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
CategorySlug = Annotated[str, Field(pattern=SLUG_PATTERN, max_length=64)]
LevelId = Annotated[str, Field(pattern=SLUG_PATTERN, min_length=1, max_length=64,
                               description="a level or department id of the policy (a slug)"), ONE_LINE]
POLICY_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
PolicyName = Annotated[str, Field(pattern=POLICY_NAME_PATTERN, max_length=64,
                                  description="a policy's name (not a path), from the server's set")]
Via = Annotated[str, Field(min_length=1, max_length=200)]
"""The calling principal, e.g. ``api:ops-bot`` (token name) or ``cli:dana`` (OS user)."""


def _server_set(description: str) -> Any:
    """A field only the server sets (the calling principal, who opened a run): ``readOnly`` in
    the schema; ``server_set_fields`` finds it in what a caller sent, which the API and CLI refuse."""
    return Field(default=None, description=description, json_schema_extra={"readOnly": True})

# Every free-text field has a bound, and a request as a whole one well under Temporal's 2 MB
# payload limit: the request is the workflow input, carried across continue-as-new, and the
# handoff travels once with each delivery batch (never copied into each notification).
MAX_REQUEST_BYTES = 64 * 1024
Text = Annotated[str, Field(max_length=8_000)]
LongText = Annotated[str, Field(max_length=16_000)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=8_000)]
Reason = Annotated[str, Field(min_length=1, max_length=2_000), ONE_LINE]
Action = Annotated[str, Field(min_length=1, max_length=1_000), ONE_LINE]

StatusFilter = Literal["open", "acknowledged", "paused", "resolved", "closed", "failed", "terminated", "active"]
"""What a list asks for: one of the state's statuses (``open`` is exactly the state's ``open``:
opened, not yet acknowledged), or ``active``: every run that has not ended (open,
acknowledged, paused, resolved). ``escalations.client.visibility_query`` maps each to a query."""
OPEN_STATUSES: tuple[Status, ...] = ("open", "acknowledged", "paused")
# A run that ended without closing: Temporal reports it failed, terminated, timed out or canceled.
ENDED_STATUSES: tuple[Status, ...] = ("closed", "failed", "terminated")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        return reject_nul(value)


class Customer(Model):
    id: Name
    name: Name
    segment: Annotated[str, Field(max_length=64), ONE_LINE] | None = None
    plan: Annotated[str, Field(max_length=64), ONE_LINE] | None = Field(
        default=None, description="The customer's plan, matched by the policy's contracts beside segment and id.")
    timezone: Annotated[str, Field(max_length=64), ONE_LINE] | None = None
    # Exactly one address: "a@x.com, b@y.com" used to pass a first-address check and reach
    # every address listed.
    email: EmailStr | None = None


class Impact(Model):
    users_affected: int = Field(default=0, ge=0, le=1_000_000_000)
    critical: bool = False
    description: Annotated[str, Field(max_length=2_000), ONE_LINE] | None = None


class Handoff(Model):
    ticket_history: LongText | None = None
    error_logs: LongText | None = None
    integration_id: Annotated[str, Field(max_length=200), ONE_LINE] | None = None
    steps_to_reproduce: Text | None = None


class Trigger(Model):
    source: TriggerSource = "client"
    criterion: Annotated[str, Field(max_length=100), ONE_LINE] | None = None
    detail: Annotated[str, Field(max_length=1_000), ONE_LINE] | None = None
    via: Via | None = Field(default=None, description="the principal that started it (api:<token>, cli:<user>)")


class EscalationRequest(Model):
    """What a caller sends to open an escalation (HTTP body, CLI file, workflow input)."""

    ticket_id: TicketId
    title: Annotated[str, Field(min_length=1, max_length=300), ONE_LINE]
    customer: Customer
    category: CategorySlug
    kind: Kind
    priority: Priority
    impact: Impact = Impact()
    handoff: Handoff = Handoff()
    policy: PolicyName | None = None
    trigger: Trigger = Field(
        default_factory=Trigger, json_schema_extra={"readOnly": True},
        description="who or which criterion opened it: set by the starter (API, CLI, sweep), never by "
                    "the caller of the API or the CLI")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "ticket_id": "SF-1042",
                    "title": "Salesforce sync failing since yesterday",
                    "customer": {"id": "acme", "name": "Acme Corp", "segment": "enterprise",
                                 "timezone": "America/New_York"},
                    "category": "integration",
                    "kind": "priority",
                    "priority": "P1",
                    "impact": {"users_affected": 250, "critical": True,
                               "description": "Board meeting tomorrow depends on synced data"},
                    "handoff": {
                        "ticket_history": "Head of Operations reported sync stopped yesterday.",
                        "error_logs": "SyncError: field 'AccountRegion__c' not found",
                        "integration_id": "sf-prod-7",
                        "steps_to_reproduce": "Trigger a manual sync from Settings > Integrations",
                    },
                }
            ]
        },
    )

    @model_validator(mode="after")
    def _bounded(self) -> "EscalationRequest":
        size = len(self.model_dump_json(exclude={"carried"} if "carried" in type(self).model_fields else None))
        if size > MAX_REQUEST_BYTES:
            raise ValueError(f"the request is {size} bytes of JSON; at most {MAX_REQUEST_BYTES} are accepted "
                             "(shorten handoff.ticket_history / handoff.error_logs)")
        return self

    @property
    def workflow_id(self) -> str:
        return workflow_id_for(self.ticket_id)

    def as_body(self) -> dict[str, Any]:
        """The request as a caller sends it (body of ``POST /escalations``, file of ``escalations
        start``): JSON, without what only the server sets (``trigger``)."""
        return self.model_dump(mode="json", exclude={"trigger"})


class UnroutableRequest(ValueError):
    """The request cannot be routed under the policy (e.g. a category with no route)."""


def entry_level(policy: Policy, request: EscalationRequest) -> str:
    """Where an escalation of this kind opens: the category's route (functional), else the
    priority's entry level. Checked at the edge (422) and decided by the workflow."""
    if request.kind == "functional":
        if request.category not in policy.routes:
            known = ", ".join(sorted(policy.routes)) or "none"
            raise UnroutableRequest(f"category {request.category!r} has no route in policy {policy.name} "
                                    f"v{policy.version}; known categories: {known}")
        return policy.routes[request.category]
    return policy.priorities[request.priority].entry_level


def server_set_fields(model: BaseModel) -> list[str]:
    """The fields only the server sets (``readOnly``) that ``model``'s sender set anyway."""
    fields = type(model).model_fields
    return [name for name in sorted(model.model_fields_set)
            if isinstance(fields[name].json_schema_extra, dict) and fields[name].json_schema_extra.get("readOnly")]


def workflow_id_for(ticket_id: str) -> str:
    return f"escalation-{ticket_id}"


def start_options(request: EscalationRequest) -> dict[str, Any]:
    """How every starter (API, CLI, sweep, demo) starts an escalation: one place for it."""
    return {
        "id": request.workflow_id,
        "static_summary": summary_for(request),
        "static_details": details_for(request),
        "task_timeout": WORKFLOW_TASK_TIMEOUT,
        "id_conflict_policy": WorkflowIDConflictPolicy.FAIL,
        "id_reuse_policy": WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    }


def postmortem_id_for(ticket_id: str) -> str:
    return f"postmortem-{ticket_id}"


def summary_for(request: EscalationRequest) -> str:
    """Static summary shown in Temporal UI: ``P1 · Acme Corp · Salesforce sync failing``."""
    return f"{request.priority} · {request.customer.name} · {request.title}"[:400]


def details_for(request: EscalationRequest) -> str:
    """Static details (markdown) shown in Temporal UI without opening payloads."""
    handoff = request.handoff
    lines = [
        f"**Ticket** {request.ticket_id} · **{request.priority}** · {request.kind} · "
        f"category `{request.category}`",
        f"**Customer** {request.customer.name} (`{request.customer.id}`"
        + (f", {request.customer.segment}" if request.customer.segment else "")
        + (f", plan {request.customer.plan}" if request.customer.plan else "")
        + ")",
        f"**Impact** {request.impact.users_affected} users"
        + (" · critical" if request.impact.critical else "")
        + (f" · {request.impact.description}" if request.impact.description else ""),
        f"**Opened by** {request.trigger.source}"
        + (f" ({request.trigger.via})" if request.trigger.via else "")
        + (f" · rule `{request.trigger.criterion}`" if request.trigger.criterion else "")
        + (f" · {request.trigger.detail}" if request.trigger.detail else ""),
        "",
        "**Handoff**",
        "",
        f"- Integration: {handoff.integration_id or '—'}",
        f"- Ticket history: {handoff.ticket_history or '—'}",
        f"- Error logs: {handoff.error_logs or '—'}",
        f"- Steps to reproduce: {handoff.steps_to_reproduce or '—'}",
    ]
    return "\n".join(lines)[:20_000]


# -- commands (workflow updates; the HTTP API's bodies) ----------------------


VIA_DESCRIPTION = ("the calling principal (api:<token name>, cli:<os user>): set by the API or the CLI, "
                   "recorded beside the self-declared by/author; a caller of the API must not send it")


class AcknowledgeCommand(Model):
    by: Name
    level: LevelId | None = Field(
        default=None,
        description="Acknowledge as this level; a consulted level records its own acknowledgement.",
    )
    via: Via | None = _server_set(VIA_DESCRIPTION)


class EscalateCommand(Model):
    by: Name
    reason: Reason
    to_level: LevelId | None = None
    from_level: LevelId | None = Field(
        default=None,
        description="Escalate only while the escalation is at this level (an action link or button is bound to "
                    "the level it paged); refused once it has moved on.",
    )
    via: Via | None = _server_set(VIA_DESCRIPTION)


class AddNoteCommand(Model):
    author: Name
    text: NonEmpty
    customer_visible: bool = False
    via: Via | None = _server_set(VIA_DESCRIPTION)


class PauseCommand(Model):
    by: Name
    reason: Reason
    via: Via | None = _server_set(VIA_DESCRIPTION)


class ResumeCommand(Model):
    by: Name
    via: Via | None = _server_set(VIA_DESCRIPTION)


class ResolveCommand(Model):
    by: Name
    root_cause: NonEmpty
    mitigation: NonEmpty
    preventive_actions: list[Action] = Field(default_factory=list, max_length=20)
    via: Via | None = _server_set(VIA_DESCRIPTION)


class ApplyPolicyCommand(Model):
    by: Name = "operator"
    version: int = Field(ge=1, le=1_000_000)
    via: Via | None = _server_set(VIA_DESCRIPTION)


class UpgradeCommand(Model):
    """Move a run of the released commit path onto the current one (``escalations repair``)."""

    by: Name = "operator"
    via: Via | None = _server_set(VIA_DESCRIPTION)


class CompletePostmortemCommand(Model):
    by: Name
    summary: NonEmpty
    root_cause: NonEmpty
    improvements: list[Action] = Field(min_length=1, max_length=20)
    kb_article_url: HttpUrl | None = None
    via: Via | None = _server_set(VIA_DESCRIPTION)

    @field_validator("root_cause")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("root cause must not be blank")
        return value


class PostmortemReport(BaseModel):
    """What the postmortem child tells its parent (signal ``postmortem_report``)."""

    kind: Literal["reminder", "overdue"]
    number: int = 0
    at: AwareDatetime


# -- state ------------------------------------------------------------------


class Deadlines(BaseModel):
    ack_due: AwareDatetime | None = None
    resolve_due: AwareDatetime | None = None
    next_customer_update_due: AwareDatetime | None = None
    at_risk_at: AwareDatetime | None = None
    auto_resume_at: AwareDatetime | None = None


class PathEntry(BaseModel):
    from_level: str | None
    to_level: str
    reason: str
    auto: bool
    at: AwareDatetime
    by: str | None = None
    via: str | None = None


class Consulted(BaseModel):
    level: str
    notified_at: AwareDatetime
    acknowledged_by: str | None = None
    acknowledged_at: AwareDatetime | None = None
    acknowledged_via: str | None = None


class PolicyRef(BaseModel):
    name: str
    version: int


class Counts(BaseModel):
    auto_escalations: int = 0
    manual_escalations: int = 0
    ack_reminders: int = 0
    notes: int = 0
    customer_updates: int = 0
    pauses: int = 0
    events: int = 0
    continued_as_new: int = 0


class Resolution(BaseModel):
    by: str
    at: AwareDatetime
    root_cause: str
    mitigation: str
    preventive_actions: list[str]
    via: str | None = None


class PostmortemState(BaseModel):
    workflow_id: str
    owner: str
    due: AwareDatetime
    reminders_sent: int = 0
    overdue_notified: bool = False
    completed_at: AwareDatetime | None = None
    completed_by: str | None = None
    completed_via: str | None = None
    summary: str | None = None
    root_cause: str | None = None
    improvements: list[str] = Field(default_factory=list)
    kb_article_url: str | None = None


class EscalationState(BaseModel):
    """The live state (query ``state``); the read model answers the same shape once closed."""

    escalation_id: str
    ticket_id: str
    workflow_id: str
    title: str
    customer: Customer
    category: str
    kind: Kind
    status: Status
    priority: Priority
    level: str
    level_name: str
    owner: str | None
    owner_contact: ContactPoint | None = None
    route: str
    deadlines: Deadlines
    sla_at_risk: bool = False
    sla_breached: bool = False
    breached_at: AwareDatetime | None = None
    path: list[PathEntry] = Field(default_factory=list)
    paged_levels: list[str] = Field(default_factory=list)
    consulted: list[Consulted] = Field(default_factory=list)
    notifications_sent: int = 0
    notifications_failed: int = 0
    last_notification_error: str | None = None
    trigger: Trigger
    policy: PolicyRef
    contract: str | None = Field(
        default=None, description="Key of the customer contract whose SLA targets apply (None: the policy's own).")
    opened_at: AwareDatetime
    acknowledged_at: AwareDatetime | None = None
    acknowledged_by: str | None = None
    acknowledged_via: str | None = None
    paused_since: AwareDatetime | None = None
    paused_total: timedelta = timedelta(0)
    resolve_remaining: timedelta | None = None
    resolved_at: AwareDatetime | None = None
    closed_at: AwareDatetime | None = None
    resolution: Resolution | None = None
    postmortem: PostmortemState | None = None
    repeat_of: str | None = None
    repeat_count: int = 0
    jira_key: str | None = None
    counts: Counts = Counts()
    last_seq: int = 0
    updated_at: AwareDatetime


# -- the postmortem child ------------------------------------------------------

class PostmortemInput(BaseModel):
    escalation_id: str
    ticket_id: str
    parent_workflow_id: str
    title: str
    priority: str
    owner: str
    owner_contact: ContactPoint | None = None
    due: AwareDatetime
    remind_every: timedelta


class PostmortemResult(BaseModel):
    completed_by: str
    completed_via: str | None = None
    completed_at: AwareDatetime
    summary: str
    root_cause: str
    improvements: list[str]
    kb_article_url: str | None = None
    reminders_sent: int
    overdue: bool


class PostmortemStatus(BaseModel):
    ticket_id: str
    owner: str
    due: AwareDatetime
    reminders_sent: int
    overdue: bool
    completed: bool


# -- domain events ----------------------------------------------------------

EventType = Literal[
    "opened",
    "acknowledged",
    "consulted_acknowledged",
    "escalated",
    "ack_reminder",
    "note_added",
    "customer_updated",
    "sla_at_risk",
    "sla_breached",
    "paused",
    "resumed",
    "policy_applied",
    "owner_changed",
    "held_until_available",
    "hold_released",
    "jira_linked",
    "notification_failed",
    "resolved",
    "csat_requested",
    "postmortem_started",
    "postmortem_reminder",
    "postmortem_overdue",
    "postmortem_completed",
    "closed",
    "run_ended",
]


class DomainEvent(BaseModel):
    escalation_id: str
    ticket_id: str
    seq: int = Field(ge=1)
    type: EventType
    occurred_at: AwareDatetime
    payload: dict[str, Any] = Field(default_factory=dict)

