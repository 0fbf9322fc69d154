"""Arguments and results of the store and policy activities."""

from __future__ import annotations

from datetime import timedelta

from pydantic import AwareDatetime, BaseModel, Field

from schemas.escalation import DomainEvent
from schemas.notifications import NotificationIntent


class EventBatch(BaseModel):
    """Events of one transition and the notifications they cause, stored in one transaction."""

    escalation_id: str
    ticket_id: str
    events: list[DomainEvent] = Field(min_length=1)
    intents: list[NotificationIntent] = Field(default_factory=list)
    run_id: str = Field(default="", description="the run whose workflow task decided the events")
    decided_in: int = Field(default=0, description="history length when that workflow task started")


class RepeatQuery(BaseModel):
    escalation_id: str
    fingerprint: str
    opened_at: AwareDatetime
    window: timedelta


class RepeatInfo(BaseModel):
    repeat_of: str | None = None
    repeat_count: int = 0


class PolicyRequest(BaseModel):
    """A policy by name (None: the configured default), optionally at an exact version."""

    name: str | None = None
    version: int | None = None
