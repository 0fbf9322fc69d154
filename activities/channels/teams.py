"""Microsoft Teams via a Workflows ("When a Teams webhook request is received") webhook.

The message carries one Adaptive Card (schema 1.4): the headline, the message,
a FactSet (priority, customer, level, next deadline) and an ``Action.OpenUrl``
to the run in Temporal UI. The webhook URL, a secret, comes from
``ESCALATION_TEAMS_WEBHOOK_URL_<TARGET>`` or ``ESCALATION_TEAMS_WEBHOOK_URL``
(target normalised as for Slack).
"""

from __future__ import annotations

from typing import Any

import httpx

from activities.channels import Delivery, SendResult, send_chat
from activities.templates import Bullets, Link, Rendered
from escalations.settings import NotificationSettings

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"


def _block(block: str | Bullets | Link) -> dict[str, Any]:
    if isinstance(block, Bullets):
        text = "\n".join(f"- {item}" for item in block.items)
    elif isinstance(block, Link):
        text = f"[{block.label}]({block.url})"
    else:
        text = block
    return {"type": "TextBlock", "text": text, "wrap": True}


def adaptive_card(message: Rendered) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": message.headline,
            "size": "Large",
            "weight": "Bolder",
            "wrap": True,
            "style": "heading",
        },
        {"type": "TextBlock", "text": message.subject, "weight": "Bolder", "wrap": True},
        *(_block(block) for block in message.blocks),
    ]
    if message.facts:
        body.append(
            {
                "type": "FactSet",
                "facts": [{"title": label, "value": value} for label, value in message.facts],
            }
        )
    if message.footer:
        body.append(
            {"type": "TextBlock", "text": message.footer, "isSubtle": True, "size": "Small",
             "wrap": True}
        )
    card: dict[str, Any] = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    if message.link is not None:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": message.link.label, "url": message.link.url}
        ]
    return card


def teams_payload(message: Rendered) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": adaptive_card(message)}
        ],
    }


class TeamsSender:
    def __init__(self, settings: NotificationSettings, http: httpx.AsyncClient):
        self._settings = settings
        self._http = http

    async def send(self, delivery: Delivery) -> SendResult:
        return await send_chat(
            self._settings,
            self._http,
            delivery,
            channel="teams",
            label="Teams",
            payload=teams_payload(delivery.message),
            id_headers=("x-ms-workflow-run-id", "x-ms-request-id", "request-id", "x-request-id"),
        )
