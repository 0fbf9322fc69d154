"""Slack incoming webhooks: Block Kit message with a plain-text fallback.

The contact's target is a name (``#eng-oncall``); the webhook URL, a secret, comes
from ``ESCALATION_SLACK_WEBHOOK_URL_<TARGET>`` (target upper-cased, every run of
other characters than letters and digits turned into ``_``, e.g. ``ENG_ONCALL``)
or else ``ESCALATION_SLACK_WEBHOOK_URL``.
"""

from __future__ import annotations

from typing import Any

import httpx

from activities.channels import Delivery, SendResult, send_chat
from activities.templates import Rendered
from escalations.settings import NotificationSettings

HEADER_LIMIT = 150
TEXT_LIMIT = 3000
FIELD_LIMIT = 2000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(text: str) -> str:
    """Slack mrkdwn control characters (``<@U123>`` mentions, ``<url|label>`` links)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(message: Rendered) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(message.headline, HEADER_LIMIT)},
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _cut(f"*{escape(message.subject)}*\n{escape(message.summary)}", TEXT_LIMIT),
            },
        },
    ]
    if message.facts:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": _cut(f"*{escape(label)}*\n{escape(value)}", FIELD_LIMIT),
                    }
                    for label, value in message.facts
                ],
            }
        )
    if message.link is not None:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": message.link.label},
                        "url": message.link.url,
                        "action_id": "open_temporal_ui",
                    }
                ],
            }
        )
    if message.footer:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": escape(message.footer)}]}
        )
    return {"text": message.subject, "blocks": blocks}


class SlackSender:
    def __init__(self, settings: NotificationSettings, http: httpx.AsyncClient):
        self._settings = settings
        self._http = http

    async def send(self, delivery: Delivery) -> SendResult:
        return await send_chat(
            self._settings,
            self._http,
            delivery,
            channel="slack",
            label="Slack",
            payload=slack_payload(delivery.message),
            id_headers=("x-slack-req-id", "x-request-id"),
        )
