"""Arguments and results of the store and policy activities."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from schemas.escalation import DomainEvent
from schemas.notifications import NotificationIntent
from schemas.policy import Policy


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


class LoadedPolicy(BaseModel):
    """A policy as loaded for a run, with the digest that pins it."""

    policy: Policy
    digest: str


# -- the projection (Temporal history -> PostgreSQL) -----------------------------


class LedgerUpdate(BaseModel):
    """What became of one delivery, for its row in the ``notifications`` ledger."""

    key: str
    status: Literal["pending", "sent", "failed"]
    attempts: int = Field(ge=1)
    last_error: str | None = None
    provider_response_id: str | None = None
    at: AwareDatetime


class Outbox(BaseModel):
    """Recorded in Temporal, not yet in PostgreSQL: written in this order by the projection."""

    events: list[DomainEvent] = Field(default_factory=list)
    intents: list[NotificationIntent] = Field(default_factory=list)
    ledger: list[LedgerUpdate] = Field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.intents or self.ledger)


class ProjectionBatch(Outbox):
    """One projection step of one escalation; stored in one transaction, idempotently."""

    escalation_id: str
    ticket_id: str
    run_id: str
    policy_digest: str | None = Field(default=None, description="of the pinned policy, registered with 'opened'")


class ProjectionResult(BaseModel):
    stored: int = 0
    already: int = 0
    repeat_of: str | None = None
    repeat_count: int | None = Field(default=None, description="set when this step projected 'opened'")


# -- housekeeping -------------------------------------------------------------------


class ReconcileRequest(BaseModel):
    """Look for escalation runs that ended without closing in this window before now."""

    lookback: timedelta = timedelta(days=7)


class ReconcileResult(BaseModel):
    checked: int = 0
    recorded: list[str] = Field(default_factory=list, description="workflow ids newly recorded as ended")
    idempotency_keys_purged: int = Field(default=0, description="API Idempotency-Keys past their TTL, deleted")
    replay_records_purged: int = Field(
        default=0, description="records of used action links past their expiry and of old Jira deliveries, deleted")


class PurgeRequest(BaseModel):
    """Delete what only guards against replays once it can no longer be replayed: API
    Idempotency-Keys older than the worker's TTL (``ESCALATION_API_IDEMPOTENCY_TTL``), uses of
    action links that have expired, and Jira webhook receipts past ``jira_receipts_kept``."""

    batch: int = Field(default=1000, ge=1, le=100_000)
    jira_receipts_kept: timedelta = timedelta(days=30)


class PurgeResult(BaseModel):
    purged: int = Field(default=0, description="Idempotency-Keys")
    action_link_uses: int = 0
    jira_receipts: int = 0
