"""Every escalation of a ticket, as the read model records them (``GET /escalations/{ticket_id}/history``).

A ticket escalated again after its escalation closed gets a new run under the same workflow id;
each is one escalation with its own ``escalation_id``, addressed by
``GET /escalation-runs/{escalation_id}``.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field

from schemas.escalation import PolicyRef, Status, Trigger
from schemas.policy import Kind, Priority


class EscalationRun(BaseModel):
    """One escalation of a ticket, from the read model (the projection of its events)."""

    escalation_id: str = Field(description="The run chain's first run id; GET /escalation-runs/{escalation_id}")
    ticket_id: str
    workflow_id: str
    status: Status
    priority: Priority
    kind: Kind
    category: str
    level: str = Field(description="The current level (the last one, once closed)")
    owner: str | None
    highest_level: str = Field(description="The highest level it reached")
    opened_at: AwareDatetime
    acknowledged_at: AwareDatetime | None
    resolved_at: AwareDatetime | None
    closed_at: AwareDatetime | None
    sla_breached: bool
    breached_at: AwareDatetime | None
    repeat_of: str | None = Field(description="The escalation_id of the earlier escalation it repeats")
    contract: str | None
    trigger: Trigger
    policy: PolicyRef
    updated_at: AwareDatetime = Field(description="When the read model last changed this row")


class EscalationHistory(BaseModel):
    ticket_id: str
    items: list[EscalationRun] = Field(description="Newest first (by opened_at)")
