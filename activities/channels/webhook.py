"""Signed JSON webhooks, and the helpers a receiver uses to check them.

``POST <target>`` with a JSON body and the headers ``Idempotency-Key`` (the
notification key: the same on every retry of one delivery, so receivers can
drop repeats), ``X-Escalation-Timestamp`` (unix seconds of this attempt) and
``X-Escalation-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``
with the secret from ``ESCALATION_WEBHOOK_SECRET``. The body is the same on
every retry; only the timestamp and signature change.

Customers' webhooks get the public part of the escalation only (no handoff
context, error logs, owner or internal deadlines).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from activities.channels import (
    IDEMPOTENCY_HEADER,
    Delivery,
    PermanentDeliveryError,
    SendResult,
    encode,
    first_header,
    host_of,
    post,
)
from escalations.settings import NotificationSettings

TIMESTAMP_HEADER = "X-Escalation-Timestamp"
SIGNATURE_HEADER = "X-Escalation-Signature"
SIGNATURE_VERSION = "v1"

_PUBLIC_ESCALATION = ("ticket_id", "title", "priority", "status")
_PUBLIC_DETAILS = (
    "n", "text", "next_update_by", "resolution", "csat_window", "csat_url", "team_name",
    "to_level_name",
)


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Escalation-Signature`` value: ``v1=`` + hex HMAC-SHA256 of ``"<ts>.<body>"``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: int = 300,
    now: float | None = None,
) -> bool:
    """True if ``body`` was signed with ``secret`` less than ``tolerance`` seconds from ``now``.

    ``headers`` is any mapping of the request's headers (names in any case). The
    signature header may list several comma-separated signatures (secret rotation).
    """
    lowered = {str(k).lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    signatures = lowered.get(SIGNATURE_HEADER.lower())
    if not timestamp or not signatures:
        return False
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance:
        return False
    expected = sign(secret, timestamp, body)
    return any(
        hmac.compare_digest(expected, candidate.strip()) for candidate in signatures.split(",")
    )


def webhook_body(delivery: Delivery) -> dict[str, Any]:
    intent = delivery.intent
    escalation = intent.context["escalation"]
    details = {k: v for k, v in intent.context.items() if k != "escalation"}
    if intent.audience == "customer":
        customer = escalation.get("customer") or {}
        deadlines = escalation.get("deadlines") or {}
        escalation = {
            **{k: escalation.get(k) for k in _PUBLIC_ESCALATION},
            "customer": {"id": customer.get("id"), "name": customer.get("name")},
            "deadlines": {"next_customer_update_due": deadlines.get("next_customer_update_due")},
        }
        details = {k: v for k, v in details.items() if k in _PUBLIC_DETAILS}
    return {
        "key": intent.key,
        "escalation_id": intent.escalation_id,
        "ticket_id": intent.ticket_id,
        "seq": intent.seq,
        "template": intent.template,
        "audience": intent.audience,
        "recipient": intent.recipient,
        "escalation": escalation,
        "details": details,
        "message": {"subject": delivery.message.subject, "text": delivery.message.text},
    }


class WebhookSender:
    def __init__(
        self,
        settings: NotificationSettings,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
    ):
        self._settings = settings
        self._http = http
        self._clock = clock

    async def send(self, delivery: Delivery) -> SendResult:
        secret = self._settings.webhook_secret
        if secret is None:
            raise PermanentDeliveryError("ESCALATION_WEBHOOK_SECRET is not set")
        target = delivery.intent.target
        if not target:
            raise PermanentDeliveryError("webhook contact has no target URL")
        body = encode(webhook_body(delivery))
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: delivery.intent.key,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret.get_secret_value(), timestamp, body),
        }
        response = await post(
            self._http,
            target,
            describe=f"webhook {host_of(target)}",
            timeout=self._settings.request_timeout,
            content=body,
            headers=headers,
        )
        return SendResult(first_header(response, "x-request-id") or str(response.status_code))
