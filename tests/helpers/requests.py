"""Request builders: the escalations tests start."""

from __future__ import annotations

import uuid
from typing import Any

from schemas.escalation import EscalationRequest


def blog_request(ticket_id: str | None = None, **overrides: Any) -> EscalationRequest:
    """The blog's Salesforce-sync escalation."""
    body: dict[str, Any] = {
        "ticket_id": ticket_id or f"SF-{uuid.uuid4().hex[:8]}",
        "title": "Salesforce sync failing since yesterday",
        "customer": {"id": "acme", "name": "Acme Corp", "segment": "enterprise",
                     "timezone": "America/New_York", "email": "ops@acme.example"},
        "category": "integration",
        "kind": "priority",
        "priority": "P1",
        "impact": {"users_affected": 250, "critical": True},
        "handoff": {
            "ticket_history": "Head of Operations: data stopped syncing yesterday; board meeting tomorrow.",
            "error_logs": "SyncError: INVALID_FIELD AccountRegion__c",
            "integration_id": "sf-prod-7",
            "steps_to_reproduce": "Run a manual sync from Settings > Integrations > Salesforce",
        },
    }
    body.update(overrides)
    return EscalationRequest.model_validate(body)
