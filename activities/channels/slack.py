"""Slack incoming webhooks: Block Kit message with an escaped notification text.

The contact's target is a name (``#eng-oncall``); the webhook URL, a secret, comes
from ``ESCALATION_SLACK_WEBHOOK_URL_<TARGET>`` (target upper-cased, every run of
other characters than letters and digits turned into ``_``, e.g. ``ENG_ONCALL``)
or else ``ESCALATION_SLACK_WEBHOOK_URL``.

Everything a user wrote is escaped for mrkdwn (``&``, ``<``, ``>``: no ``<!channel>``,
``<@U…>`` mentions or ``<url|label>`` links of theirs), in the blocks and in the top-level
``text`` (what Slack shows in notifications), and mrkdwn objects are ``verbatim`` (Slack
turns no URL or channel name in them into a link). Texts are cut to Slack's limits counted
as Slack counts them, in UTF-16 code units; each line of the message is its own section, so
a long note is shortened without touching the deadline and reason lines.

A page's action links are buttons (``action_id`` ``acknowledge``, ``escalate``, ``note``). With
``ESCALATION_SLACK_SIGNING_SECRET`` set (the Slack app's interactivity points at
``POST /integrations/slack/interactions``), acknowledge and escalate carry their signed token
as ``value`` and act in Slack for the member who presses them; without it, every button opens
its link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from activities.channels import Delivery, SendResult, encode, prepared, send_chat
from activities.templates import Bullets, Link, Rendered, fit, utf16_units
from escalations.settings import NotificationSettings

# https://docs.slack.dev/reference/block-kit/blocks and .../composition-objects (UTF-16 units)
TEXT_LIMIT = 40_000  # top-level text: Slack truncates beyond it
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
CONTEXT_LIMIT = 3000
BUTTON_TEXT_LIMIT = 75
URL_LIMIT = 3000
VALUE_LIMIT = 2000  # a button's value
IN_SLACK = ("acknowledge", "escalate")  # what a button does in Slack itself (interactivity)


def escape(text: str) -> str:
    """Slack's control characters: ``&``, ``<``, ``>`` (mentions, links, commands)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link_url(url: str) -> str:
    """A URL as it goes inside ``<url|label>``: nothing in it ends the link early."""
    return url.replace("&", "&amp;").replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")


def _within(text: str, shape: Callable[[str], str], limit: int) -> str:
    """``shape(text)`` with ``text`` shortened until it fits ``limit`` UTF-16 units."""
    [fitted] = fit([text], lambda t: utf16_units(shape(t[0])), limit)
    return shape(fitted)


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _block_text(block: str | Bullets | Link) -> str:
    if isinstance(block, Bullets):
        items = list(block.items)
        fitted = fit(items, lambda xs: utf16_units("\n".join(f"• {escape(x)}" for x in xs)), SECTION_LIMIT)
        return "\n".join(f"• {escape(x)}" for x in fitted)
    if isinstance(block, Link):
        url = link_url(block.url)
        return _within(block.label, lambda label: f"<{url}|{escape(label)}>", SECTION_LIMIT)
    return _within(block, escape, SECTION_LIMIT)


def _action_buttons(message: Rendered, interactive: bool) -> list[dict[str, Any]]:
    """A button per action link. ``interactive`` (the app's interactivity is set up): acknowledge
    and escalate carry the signed token as their ``value`` and act in Slack; otherwise every
    button opens its link (a confirmation page). "Add a note" always opens its page (text)."""
    buttons: list[dict[str, Any]] = []
    for action in message.actions:
        button: dict[str, Any] = {
            "type": "button", "action_id": action.name,
            "text": {"type": "plain_text", "text": _within(action.label, str, BUTTON_TEXT_LIMIT)},
        }
        if action.name == "acknowledge":
            button["style"] = "primary"
        if interactive and action.name in IN_SLACK and len(action.token) <= VALUE_LIMIT:
            button["value"] = action.token
        elif utf16_units(action.url) <= URL_LIMIT:
            button["url"] = action.url
        else:
            continue
        buttons.append(button)
    return buttons


def slack_payload(message: Rendered, *, interactive: bool = False) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "text": _within(message.headline, str, HEADER_LIMIT)}},
        {"type": "section", "text": _mrkdwn(_within(message.subject, lambda s: f"*{escape(s)}*", SECTION_LIMIT))},
        *({"type": "section", "text": _mrkdwn(_block_text(block))} for block in message.blocks),
    ]
    if message.facts:
        blocks.append({
            "type": "section",
            "fields": [
                _mrkdwn(_within(value, lambda v, label=label: f"*{escape(label)}*\n{escape(v)}", FIELD_LIMIT))
                for label, value in message.facts
            ],
        })
    buttons = _action_buttons(message, interactive)
    if message.link is not None and utf16_units(message.link.url) <= URL_LIMIT:
        buttons.append({
            "type": "button",
            "text": {"type": "plain_text", "text": _within(message.link.label, str, BUTTON_TEXT_LIMIT)},
            "url": message.link.url,
            "action_id": "open_temporal_ui",
        })
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    if message.footer:
        blocks.append({"type": "context", "elements": [_mrkdwn(_within(message.footer, escape, CONTEXT_LIMIT))]})
    return {"text": _within(message.subject, escape, TEXT_LIMIT), "blocks": blocks}


class SlackSender:
    def __init__(self, settings: NotificationSettings, http: httpx.AsyncClient):
        self._settings = settings
        self._http = http

    def prepare(self, delivery: Delivery) -> Delivery:
        interactive = self._settings.slack_signing_secret is not None
        return prepared(delivery, lambda d: encode(slack_payload(d.message, interactive=interactive)))

    async def send(self, delivery: Delivery) -> SendResult:
        return await send_chat(
            self._settings,
            self._http,
            delivery,
            channel="slack",
            label="Slack",
            payload=self.prepare(delivery).payload,
            id_headers=("x-slack-req-id", "x-request-id"),
        )
