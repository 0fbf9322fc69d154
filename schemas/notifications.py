"""What the workflow asks to be delivered, and what the delivery activity reports back.

The workflow decides who hears what (an intent per recipient); the delivery
activity renders the message for the recipient's channel and sends it. The
idempotency key is escalation id + event seq + recipient + channel.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field

from schemas.actions import ActionGrant
from schemas.policy import Channel

Audience = Literal["owner", "consulted", "breach", "customer", "postmortem"]

# Template ids; their texts live in activities/templates.py.
Template = Literal[
    "escalation_opened",  # owner: a new escalation at your level
    "escalated",  # owner: escalated to your level (manual or ack timeout)
    "ack_reminder",  # owner at the last level: still not acknowledged
    "consulted",  # manager brought in on a hierarchical escalation
    "sla_at_risk",  # owner: resolution budget mostly used
    "sla_breached",  # breach_notifies level
    "customer_update_due",  # owner: the customer got an automatic status update
    "note_added",  # owner: a note was added
    "customer_escalated",  # customer: "We've escalated this to our ... team"
    "customer_update",  # customer: automatic or customer-visible note, "Next update by ..."
    "customer_resolved",  # customer: root cause, mitigation, preventive actions
    "csat_request",  # customer: rate us 1-5
    "postmortem_assigned",  # postmortem owner: task created with due date
    "postmortem_reminder",  # postmortem owner: still open
    "postmortem_overdue",  # management: postmortem past due
]


def notification_key(escalation_id: str, seq: int, recipient: str, channel: str) -> str:
    return f"{escalation_id}:{seq}:{recipient}:{channel}"


class NotificationIntent(BaseModel):
    key: str
    escalation_id: str
    ticket_id: str
    seq: int
    audience: Audience
    recipient: str
    channel: Channel
    target: str | None = None
    template: Template
    context: dict[str, Any] = Field(default_factory=dict)
    actions: ActionGrant | None = Field(
        default=None, description="a page's signed action links (acknowledge, escalate, note), made when it is rendered")


class DeliveryBatch(BaseModel):
    """The intents of one committed batch of events; delivered by one activity.

    ``handoff`` travels once per batch (never copied into each intent): channels that carry
    it (Jira, internal webhooks) find it in ``context["escalation"]["handoff"]`` when the
    message is rendered. Runs of the released commit path put it in every intent instead.
    """

    escalation_id: str
    ticket_id: str
    intents: list[NotificationIntent]
    handoff: dict[str, Any] | None = None
    round: int = Field(default=1, ge=1, description="which delivery round of these intents this is")


class DeliveryFailure(BaseModel):
    key: str
    recipient: str
    channel: Channel
    error: str
    permanent: bool


class DeliveryOutcome(BaseModel):
    sent: list[str] = Field(default_factory=list)
    already_sent: list[str] = Field(default_factory=list)
    failed: list[DeliveryFailure] = Field(default_factory=list)
    jira_key: str | None = None


class Sent(BaseModel):
    key: str
    provider_response_id: str | None = None
    at: AwareDatetime


class ToRetry(BaseModel):
    key: str
    error: str
    retry_after: float | None = None


class SendOutcome(BaseModel):
    """One delivery round: what was sent, what failed for good, what to try again later."""

    sent: list[Sent] = Field(default_factory=list)
    failed: list[DeliveryFailure] = Field(default_factory=list)
    retry: list[ToRetry] = Field(default_factory=list)
    jira_key: str | None = None
