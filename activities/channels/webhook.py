"""Signed JSON webhooks (Standard Webhooks), and the helpers a receiver uses to check them.

``POST <target>`` with a JSON body and the Standard Webhooks headers
(https://www.standardwebhooks.com, verifiers in every language):

* ``webhook-id``: the notification key, the same on every retry of one delivery (receivers
  drop repeats by it); also sent as ``Idempotency-Key``, with the same value;
* ``webhook-timestamp``: unix seconds of this attempt;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")>``, so
  the signature covers the key receivers deduplicate on, the time and the body.

Every destination has its own key (``whsec_…``), derived from ``ESCALATION_WEBHOOK_SECRET``,
the audience and the target URL (``NotificationSettings.webhook_signing_secret``): a customer
who can verify its own webhooks cannot sign an internal one. ``escalations webhook-secret
URL [--customer]`` prints a destination's key. The body is the same on every retry; only the
timestamp and signature change.

Customers' webhooks get the public part of the escalation only (no handoff
context, error logs, owner or internal deadlines). Internal ones carry ``actions``: a page's
signed action links by action (``acknowledge``, ``escalate``, ``note``), empty otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from activities.channels import (
    IDEMPOTENCY_HEADER,
    Delivery,
    PermanentDeliveryError,
    SendResult,
    encode,
    first_header,
    header_value,
    host_of,
    post,
    prepared,
)
from escalations.settings import NotificationSettings

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"

_PUBLIC_ESCALATION = ("ticket_id", "title", "priority", "status")
_PUBLIC_DETAILS = (
    "n", "text", "next_update_by", "resolution", "csat_window", "csat_url", "team_name",
    "to_level_name",
)


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one attempt (``v1,<base64>``)."""
    return Webhook(secret).sign(message_id, datetime.fromtimestamp(timestamp, UTC), body.decode())


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """True if ``body`` and ``headers`` were signed with ``secret`` in the last five minutes.

    ``headers`` is any mapping of the request's headers (names in any case); the signature
    header may list several space-separated signatures (key rotation).
    """
    try:
        Webhook(secret).verify(body, {str(k): v for k, v in headers.items()}, json_parse=False)
    except (WebhookVerificationError, ValueError):  # ValueError: a malformed signature header
        return False
    return True


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
    body = {
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
    if intent.audience != "customer":
        # The signed action links of a page ({"acknowledge": url, "escalate": url, "note": url});
        # empty for messages that are no page, or while links are off.
        body["actions"] = {action.name: action.url for action in delivery.message.actions}
    return body


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

    def prepare(self, delivery: Delivery) -> Delivery:
        return prepared(delivery, lambda d: encode(webhook_body(d)))

    async def send(self, delivery: Delivery) -> SendResult:
        if self._settings.webhook_secret is None:
            raise PermanentDeliveryError("ESCALATION_WEBHOOK_SECRET is not set")
        target = delivery.intent.target
        if not target:
            raise PermanentDeliveryError("webhook contact has no target URL")
        body = self.prepare(delivery).payload
        secret = self._settings.webhook_signing_secret(target, customer=delivery.intent.audience == "customer")
        message_id = header_value(delivery.intent.key)
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: message_id,
            ID_HEADER: message_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, message_id, timestamp, body),
        }
        response = await post(
            self._http,
            target,
            describe=f"webhook {host_of(target)}",
            timeout=self._settings.request_timeout,
            content=body,
            headers=headers,
            max_body=self._settings.max_response_bytes,
        )
        return SendResult(first_header(response, "x-request-id") or str(response.status_code))
