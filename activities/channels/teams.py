"""Microsoft Teams via a Workflows ("When a Teams webhook request is received") webhook.

The message carries one Adaptive Card, version 1.5 (``style: heading`` needs it; Teams
renders up to 1.5): the headline, the message, a FactSet (priority, customer, level, next
deadline), an ``Action.OpenUrl`` per action link of a page (acknowledge, escalate, add a note)
and one to the run in Temporal UI. The webhook URL, a secret,
comes from ``ESCALATION_TEAMS_WEBHOOK_URL_<TARGET>`` or ``ESCALATION_TEAMS_WEBHOOK_URL``
(target normalised as for Slack).

Teams renders TextBlocks and facts as Markdown, so every text is escaped for it
(``markdown_escape``): what a user wrote never becomes a link, emphasis or list. The POST
stays within Teams' 28 KB message limit, counted in bytes of the request body: the longest
texts are shortened first, the deadline and reason lines last.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx

from activities.channels import Delivery, SendResult, encode, prepared, send_chat
from activities.templates import Bullets, Link, Rendered, add_block_texts, fit
from escalations.settings import NotificationSettings

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.5"
# Teams: "The message size limit is 28 KB". Counted as 28,000 bytes, under either reading of KB.
MAX_POST_BYTES = 28_000

# CommonMark backslash escapes for what starts Markdown in Teams: emphasis, code, links and
# autolinks, the card's {{DATE()}} functions, entities, list markers. A "(" right after "]" is
# escaped too, so that renderers without backslash escapes never see "](" either, and no link.
_MARKDOWN = re.compile(r"[\\`*_~<>\[\]{}]|(?<=\])\(|&(?=#?\w+;)")
# At the start of a line: list items ("- ", "+ ", "1. ", "1) "), headings, rules.
_LINE_START = re.compile(r"^(\s*)(?:([-+#=])|(\d+)([.)]))", re.MULTILINE)


def _escape_line_start(match: re.Match[str]) -> str:
    indent, mark, digits, dot = match.groups()
    return f"{indent}\\{mark}" if mark else f"{indent}{digits}\\{dot}"


def markdown_escape(text: str) -> str:
    """``text`` shown literally by a Markdown renderer, line breaks kept as paragraphs."""
    escaped = _LINE_START.sub(_escape_line_start, _MARKDOWN.sub(lambda m: "\\" + m.group(), text))
    # A single newline is a soft break (a space) in Markdown; a blank line keeps the line.
    return escaped.replace("\n", "\n\n")


def _link_destination(url: str) -> str:
    return url.replace("(", "%28").replace(")", "%29").replace("<", "%3C").replace(">", "%3E")


def _texts(message: Rendered) -> tuple[list[str], set[int]]:
    """Every text of the card in order, and which are deadline or reason lines."""
    texts = [message.headline, message.subject]
    kept: set[int] = set()
    add_block_texts(message.blocks, texts, kept)
    texts.extend(value for _, value in message.facts)
    texts.append(message.footer)
    return texts, kept


def _text_block(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _card(message: Rendered, texts: list[str]) -> dict[str, Any]:
    parts: Iterator[str] = iter(texts)
    body: list[dict[str, Any]] = [
        _text_block(markdown_escape(next(parts)), size="Large", weight="Bolder", style="heading"),
        _text_block(markdown_escape(next(parts)), weight="Bolder"),
    ]
    for block in message.blocks:
        if isinstance(block, Bullets):
            items = [next(parts) for _ in block.items]
            body.append(_text_block("\n".join(f"- {markdown_escape(item)}" for item in items)))
        elif isinstance(block, Link):
            label = markdown_escape(next(parts))
            body.append(_text_block(f"[{label}]({_link_destination(block.url)})"))
        else:
            body.append(_text_block(markdown_escape(next(parts))))
    if message.facts:
        body.append({
            "type": "FactSet",
            "facts": [{"title": markdown_escape(label), "value": markdown_escape(next(parts))}
                      for label, _ in message.facts],
        })
    footer = next(parts)
    if footer:
        body.append(_text_block(markdown_escape(footer), isSubtle=True, size="Small"))
    card: dict[str, Any] = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},  # Teams' own extension (not in the Adaptive Card schema)
    }
    actions = [{"type": "Action.OpenUrl", "title": action.label, "url": action.url} for action in message.actions]
    if message.link is not None:
        actions.append({"type": "Action.OpenUrl", "title": message.link.label, "url": message.link.url})
    if actions:
        card["actions"] = actions
    return card


def _payload(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


def adaptive_card(message: Rendered) -> dict[str, Any]:
    """The card, its texts shortened until the whole POST fits ``MAX_POST_BYTES``."""
    texts, kept = _texts(message)
    fitted = fit(texts, lambda ts: len(encode(_payload(_card(message, ts)))), MAX_POST_BYTES, kept=kept)
    return _card(message, fitted)


def teams_payload(message: Rendered) -> dict[str, Any]:
    return _payload(adaptive_card(message))


class TeamsSender:
    def __init__(self, settings: NotificationSettings, http: httpx.AsyncClient):
        self._settings = settings
        self._http = http

    def prepare(self, delivery: Delivery) -> Delivery:
        return prepared(delivery, lambda d: encode(teams_payload(d.message)))

    async def send(self, delivery: Delivery) -> SendResult:
        return await send_chat(
            self._settings,
            self._http,
            delivery,
            channel="teams",
            label="Teams",
            payload=self.prepare(delivery).payload,
            id_headers=("x-ms-workflow-run-id", "x-ms-request-id", "request-id", "x-request-id"),
        )
