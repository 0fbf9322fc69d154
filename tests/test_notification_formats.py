"""Every template, with hostile content, in every channel's format, checked by the vendors' validators.

Hostile content is what a ticket can carry: Slack control sequences (``<!channel>``,
``<@U123>``, ``<https://evil.example|click me>``), Markdown links, HTML, ``javascript:`` URLs,
CR/LF (single-line fields of runs started before the intake refused them) and texts at the
API's own maximum lengths (16,000-character logs, 8,000-character notes). For each template:

* Slack: ``slack_sdk``'s Block Kit models accept every block; nothing a user wrote is a
  mention or a link in the blocks or the top-level ``text``; limits hold in UTF-16 units;
* Teams: the card is valid under the Adaptive Card schema of the version it declares; a
  CommonMark parser finds no link, emphasis, HTML or heading in what a user wrote; the POST
  is at most 28,000 bytes;
* Jira: description and comment are valid ADF (Atlassian's schema), at most 32,767
  characters; the summary is one line of at most 255;
* e-mail: the HTML has no script and links only to ``https:``/``mailto:``; the message
  builds with a one-line subject.

Every template is also offered a page's action links (acknowledge, escalate, add a note): only
internal messages carry them, each format only as its own links (Slack buttons with the token as
their value when they act in Slack).

A red test here means a channel sends something its vendor rejects, or renders what a user
wrote as markup: fix the channel's formatting (``activities/channels/``), not the test.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any, get_args
from urllib.parse import unquote

import pytest
from markdown_it import MarkdownIt

from activities.channels import Delivery, encode
from activities.channels.email import build_message
from activities.channels.jira import MAX_DOCUMENT_CHARS, comment_body, issue_description
from activities.channels.slack import slack_payload
from activities.channels.teams import MAX_POST_BYTES, teams_payload
from activities.templates import Action, Kept, Link, Rendered, jira_summary, render, utf16_units
from schemas.notifications import NotificationIntent, Template
from tests.helpers.vendors import adaptive_card_problems, adf_problems, slack_problems

UI_LINK = "https://temporal.example/namespaces/default/workflows/escalation-SF-1042"
# A page's signed action links, as activities.notifications makes them (tokens are base64url).
TOKEN = "eyJhIjoiYWNrbm93bGVkZ2UifQ." + "A" * 43
ACTIONS = tuple(Action(name, label, f"https://escalations.example/actions/{name}/{TOKEN}", TOKEN)
                for name, label in (("acknowledge", "Acknowledge"), ("escalate", "Escalate"), ("note", "Add a note")))
ACTION_LINKS = {action.url for action in ACTIONS}
CSAT_LINK = "https://csat.example/rate?ticket=SF-1042&score=|5>"
EVIL = "https://evil.example"
HOSTILE = (f"<!channel> <!here> <@U123> <{EVIL}|click me> [x]({EVIL}) <script>alert(1)</script> "
           "javascript:alert(1) **bold** _it_ {{DATE(2026-11-27T13:00:00Z)}} &lt;")
CRLF = "\r\nBcc: victim@evil.example\r\n"
CUSTOMER_TEMPLATES = {"customer_escalated", "customer_update", "customer_resolved", "csat_request"}


def long(text: str, size: int) -> str:
    """``text`` repeated to exactly ``size`` characters."""
    return (text * (size // len(text) + 1))[:size]


def hostile_context(*, csat_url: str = "javascript:alert(document.cookie)") -> dict[str, Any]:
    multiline = HOSTILE + "\r\n- item\n1. step\n# heading\n> quote\n😀 ünïcödé\n"
    escalation = {
        "ticket_id": "SF-1042", "workflow_id": "escalation-SF-1042", "priority": "P1", "kind": "priority",
        "category": "integration", "status": "open", "level": "tier2",
        "title": long(HOSTILE + CRLF, 300),
        "level_name": long("Tier 2 " + HOSTILE, 200), "owner": long("Dana " + HOSTILE, 200),
        "customer": {"id": "acme", "name": long("Acme " + HOSTILE + CRLF, 200), "segment": "enterprise",
                     "timezone": "Europe/Berlin", "email": "ops@acme.example"},
        "impact": {"users_affected": 250, "critical": True, "description": long(HOSTILE, 2000)},
        "handoff": {"ticket_history": long(multiline, 16_000), "error_logs": long(multiline, 16_000),
                    "integration_id": long(HOSTILE, 200), "steps_to_reproduce": long(multiline, 8_000)},
        "deadlines": {"ack_due": "2026-11-27T12:30:00Z", "resolve_due": "2026-11-27T16:00:00Z",
                      "next_customer_update_due": "2026-11-27T13:00:00Z"},
    }
    return {
        "escalation": escalation,
        "by": long("dana " + HOSTILE, 200), "reason": long(HOSTILE, 2000), "text": long(multiline, 8_000),
        "from_level": "tier1", "to_level": "tier2", "to_level_name": long("Engineering " + HOSTILE, 200),
        "from_level_name": long("Tier 1 " + HOSTILE, 200), "auto": False, "via": long("api:" + HOSTILE, 200),
        "paging_note": long(HOSTILE, 2000), "held_note": long(HOSTILE, 500), "was_due": "2026-11-27T12:00:00Z",
        "jira_priority": long(HOSTILE, 255),
        "n": 2, "next_update_by": "2026-11-27T15:00:00Z", "postmortem_due": "2026-12-02T16:00:00Z",
        "csat_window": "7d", "csat_url": csat_url,
        "resolution": {"root_cause": long(multiline, 8_000), "mitigation": long(multiline, 8_000),
                       "preventive_actions": [long(HOSTILE, 1_000)] * 20},
    }


def audience_of(template: str) -> str:
    return "customer" if template in CUSTOMER_TEMPLATES else "owner"


def delivery(template: str, context: dict[str, Any], message: Rendered, channel: str) -> Delivery:
    intent = NotificationIntent(
        key=f"run-1:3:Eng on-call:{channel}", escalation_id="run-1", ticket_id="SF-1042", seq=3,
        audience=audience_of(template), recipient="Eng on-call", channel=channel, target="ESC",
        template=template, context=context)
    return Delivery(intent, message)


# -- what each format may contain ------------------------------------------------

_SAFE_SLACK_LINK = re.compile(r"<(?:https://|mailto:)[^|<>\s]*\|[^<>]*>")


def slack_texts(payload: dict[str, Any]) -> list[str]:
    """Every mrkdwn text of the payload, and the top-level text."""
    found = [payload["text"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                assert node.get("verbatim") is True, f"mrkdwn without verbatim: {node}"
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(payload["blocks"])
    return found


def assert_slack_is_safe(payload: dict[str, Any], allowed_links: set[str]) -> None:
    assert slack_problems(payload) == []
    for text in slack_texts(payload):
        for link in _SAFE_SLACK_LINK.findall(text):
            url = link[1:link.index("|")].replace("&amp;", "&").replace("%7C", "|").replace("%3E", ">")
            assert url in allowed_links, f"a link nobody configured: {link}"
        rest = _SAFE_SLACK_LINK.sub("", text)
        assert "<" not in rest and ">" not in rest, f"Slack control sequence in {rest[:200]!r}"
    assert utf16_units(payload["text"]) <= 40_000
    for block in payload["blocks"]:
        if block["type"] == "header":
            assert utf16_units(block["text"]["text"]) <= 150
        if block["type"] == "section" and "text" in block:
            assert utf16_units(block["text"]["text"]) <= 3000
        for field in block.get("fields", []):
            assert utf16_units(field["text"]) <= 2000


_MARKDOWN = MarkdownIt("commonmark")
_MARKUP_TOKENS = {"strong_open", "em_open", "html_inline", "html_block", "image", "code_inline", "heading_open",
                  "blockquote_open", "code_block", "fence", "hr", "ordered_list_open"}


def teams_markdown(card: dict[str, Any]) -> list[tuple[str, bool]]:
    """Every Markdown text of the card (TextBlocks, fact titles and values), and whether it is a list."""
    texts = []
    for element in card["body"]:
        if element["type"] == "TextBlock":
            texts.append((element["text"], element["text"].startswith("- ")))
        elif element["type"] == "FactSet":
            texts.extend((text, False) for fact in element["facts"] for text in (fact["title"], fact["value"]))
    return texts


def assert_teams_is_safe(payload: dict[str, Any], allowed_links: set[str]) -> None:
    assert len(encode(payload)) <= MAX_POST_BYTES
    [attachment] = payload["attachments"]
    card = attachment["content"]
    assert card["version"] == "1.5"
    assert adaptive_card_problems(card) == []
    for text, is_list in teams_markdown(card):
        tokens = _MARKDOWN.parse(text)
        inline = [child for token in tokens for child in (token.children or [])]
        assert not {t.type for t in [*tokens, *inline]} & _MARKUP_TOKENS, f"markup in {text[:200]!r}"
        if not is_list:
            assert not any(t.type == "bullet_list_open" for t in tokens), f"a list in {text[:200]!r}"
        for link in (t for t in inline if t.type == "link_open"):
            # CommonMark percent-encodes what a destination may not hold; the address is the same.
            assert unquote(str(link.attrs["href"])) in {unquote(url) for url in allowed_links}, (
                f"a link nobody configured: {link.attrs['href']}")
    for action in card.get("actions", []):
        assert action["url"] in allowed_links


def adf_links(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [mark["attrs"]["href"] for mark in node.get("marks", []) if mark.get("type") == "link"]
        return found + [href for value in node.values() for href in adf_links(value)]
    if isinstance(node, list):
        return [href for value in node for href in adf_links(value)]
    return []


def assert_jira_is_safe(document: dict[str, Any], allowed_links: set[str]) -> None:
    assert adf_problems(document) == []
    assert utf16_units(json.dumps(document, ensure_ascii=False, separators=(",", ":"))) <= MAX_DOCUMENT_CHARS
    assert set(adf_links(document)) <= allowed_links


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.hrefs += [value or "" for name, value in attrs if name in ("href", "src")]


def assert_html_is_safe(html: str, allowed_links: set[str]) -> None:
    parsed = _Html()
    parsed.feed(html)
    assert "script" not in parsed.tags
    assert set(parsed.hrefs) <= allowed_links, parsed.hrefs


# -- every template, every channel ----------------------------------------------


@pytest.mark.parametrize("csat_url", ["javascript:alert(document.cookie)", CSAT_LINK])
@pytest.mark.parametrize("template", sorted(get_args(Template)))
def test_every_template_passes_the_vendor_validators_with_hostile_content(template, csat_url):
    context = hostile_context(csat_url=csat_url)
    # Every template gets action links offered; only internal ones may carry them.
    message = render(template, context, audience_of(template), workflow_url=UI_LINK, actions=ACTIONS)
    allowed = {UI_LINK, CSAT_LINK, *ACTION_LINKS}
    assert message.actions == (() if audience_of(template) == "customer" else ACTIONS)

    assert_slack_is_safe(slack_payload(message), allowed)
    assert_slack_is_safe(slack_payload(message, interactive=True), allowed)
    assert_teams_is_safe(teams_payload(message), allowed)
    jira = delivery(template, context, message, "jira")
    assert_jira_is_safe(issue_description(jira), allowed)
    assert_jira_is_safe(comment_body(jira), allowed)
    summary = jira_summary(context)
    assert utf16_units(summary) <= 255 and not re.search(r"[\x00-\x1f\x7f-\x9f]", summary)
    assert_html_is_safe(message.html, allowed)
    mail = build_message(delivery(template, context, message, "email"), "Escalations <e@support.example>",
                         "ops@acme.example")
    assert "\n" not in mail["Subject"] and "\r" not in mail["Subject"]
    assert mail.as_bytes()  # every header serialises
    links = [block.url for block in message.blocks if isinstance(block, Link)]
    assert set(links) <= allowed and (message.link is None or message.link.url == UI_LINK)


def test_action_links_in_every_format():
    """A page's action links: text lines, e-mail buttons, Slack buttons (acting in Slack when its
    interactivity is set up), Teams Action.OpenUrl, Jira link paragraphs."""
    context, _ = _message()
    message = render("escalation_opened", context, "owner", workflow_url=UI_LINK, actions=ACTIONS)
    assert "Acknowledge: https://escalations.example/actions/acknowledge/" in message.text
    parsed = _Html()
    parsed.feed(message.html)
    assert [href for href in parsed.hrefs if "/actions/" in href] == [a.url for a in ACTIONS]

    def slack_buttons(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
        [block] = [b for b in payload["blocks"] if b["type"] == "actions"]
        return {element["action_id"]: element for element in block["elements"]}

    linked = slack_buttons(slack_payload(message))
    assert [linked[name]["url"] for name in ("acknowledge", "escalate", "note")] == [a.url for a in ACTIONS]
    assert linked["acknowledge"]["style"] == "primary" and "value" not in linked["acknowledge"]
    in_slack = slack_buttons(slack_payload(message, interactive=True))
    assert in_slack["acknowledge"]["value"] == in_slack["escalate"]["value"] == TOKEN
    assert "url" not in in_slack["acknowledge"] and in_slack["note"]["url"] == ACTIONS[2].url
    assert in_slack["open_temporal_ui"]["url"] == UI_LINK

    card = teams_payload(message)["attachments"][0]["content"]
    assert [(a["title"], a["url"]) for a in card["actions"]] == [
        *((a.label, a.url) for a in ACTIONS), ("Open in Temporal UI", UI_LINK)]
    for document in (issue_description(delivery("escalation_opened", context, message, "jira")),
                     comment_body(delivery("escalation_opened", context, message, "jira"))):
        assert [href for href in adf_links(document) if "/actions/" in href] == [a.url for a in ACTIONS]


@pytest.mark.parametrize("url", ["javascript:alert(1)", "http://escalations.example/actions/acknowledge/t",
                                 "https://x.example/a b"])
def test_an_action_link_is_a_button_only_when_safe(url):
    context, _ = _message()
    unsafe = Action("acknowledge", "Acknowledge", url, TOKEN)
    message = render("escalation_opened", context, "owner", actions=(unsafe,))
    assert message.actions == ()
    local = Action("acknowledge", "Acknowledge", f"http://127.0.0.1:8000/actions/acknowledge/{TOKEN}", TOKEN)
    assert render("escalation_opened", context, "owner", actions=(local,)).actions == (local,)  # the dev stack


# -- each hole the issue saw, one by one ------------------------------------------


def _message(template: str = "escalation_opened", **extra: Any) -> tuple[dict[str, Any], Rendered]:
    context = {**hostile_context(), **extra}
    return context, render(template, context, audience_of(template), workflow_url=UI_LINK)


def test_slack_notification_text_carries_no_mention_or_link():
    _, message = _message()
    text = slack_payload(message)["text"]
    for sequence in ("<!channel>", "<!here>", "<@U123>", f"<{EVIL}|click me>"):
        assert sequence not in text
    assert "&lt;!channel&gt;" in text and "&lt;@U123&gt;" in text


def test_teams_renders_a_markdown_link_in_a_title_as_text():
    _, message = _message()
    card = teams_payload(message)["attachments"][0]["content"]
    rendered = _MARKDOWN.render(card["body"][0]["text"])
    assert "<a " not in rendered and "[x](https://evil.example)" in rendered
    [facts] = [element["facts"] for element in card["body"] if element["type"] == "FactSet"]
    customer = next(f["value"] for f in facts if f["title"] == "Customer")
    assert "<a " not in _MARKDOWN.render(customer)


def test_teams_card_is_valid_for_the_version_it_declares():
    _, message = _message()
    card = teams_payload(message)["attachments"][0]["content"]
    assert card["body"][0]["style"] == "heading"  # a 1.5 feature ...
    assert adaptive_card_problems(card) == []  # ... in a card that says 1.5
    assert adaptive_card_problems({**card, "version": "1.4"}) == [
        "body/0: Additional properties are not allowed ('style' was unexpected)"]


def test_a_title_with_cr_lf_is_one_line_in_jira_and_email():
    context, message = _message()
    assert "\r" not in jira_summary(context) and "\n" not in jira_summary(context)
    assert "Bcc: victim@evil.example" in jira_summary(context)  # kept as text, on the same line
    mail = build_message(delivery("escalation_opened", context, message, "email"), "e@support.example",
                         "ops@acme.example")
    assert mail["Bcc"] is None and "\n" not in mail["Subject"]


@pytest.mark.parametrize("url", ["javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,<script>x</script>",
                                 "http://plain.example/r", "//evil.example/r", "https://", " https://x.example"])
def test_only_https_and_mailto_become_links(url):
    context, message = _message("csat_request", csat_url=url)
    allowed = {UI_LINK}
    assert not any(isinstance(block, Link) for block in message.blocks)
    assert "Just reply to this message" in message.text
    assert_html_is_safe(message.html, allowed)
    assert_slack_is_safe(slack_payload(message), allowed)
    assert_teams_is_safe(teams_payload(message), allowed)
    assert set(adf_links(comment_body(delivery("csat_request", context, message, "jira")))) <= allowed
    # The UI link too: a javascript: ESCALATION_UI_URL makes no link anywhere.
    unsafe = render("sla_breached", context, "breach", workflow_url="javascript:alert(1)")
    assert unsafe.link is None and 'href="javascript:' not in unsafe.html
    assert "actions" not in teams_payload(unsafe)["attachments"][0]["content"]


def test_mailto_links_are_kept():
    _, message = _message("csat_request", csat_url="mailto:csat@support.example?subject=SF-1042")
    assert 'href="mailto:csat@support.example?subject=SF-1042"' in message.html


def test_limits_are_the_vendors_own_counted_their_way():
    emoji = "😀" * 4_000  # 4,000 characters, 8,000 UTF-16 units, 16,000 UTF-8 bytes
    context, message = _message("note_added", text=emoji)
    slack = slack_payload(message)
    note = next(b["text"]["text"] for b in slack["blocks"] if b.get("text", {}).get("text", "").startswith("😀"))
    # Counted in UTF-16 units (an emoji is two), not code points: 1,500 emoji fill the 3,000.
    assert 2990 <= utf16_units(note) <= 3000 and len(note) <= 1500
    assert len(encode(teams_payload(message))) <= MAX_POST_BYTES
    description = issue_description(delivery("note_added", context, message, "jira"))
    size = utf16_units(json.dumps(description, ensure_ascii=False, separators=(",", ":")))
    assert MAX_DOCUMENT_CHARS - 100 < size <= MAX_DOCUMENT_CHARS  # shortened to the limit, not far below


def test_shortening_keeps_the_deadline_and_reason_lines():
    context, message = _message("customer_update")
    next_update = message.blocks[-1]
    assert isinstance(next_update, Kept) and next_update.startswith("Next update by")
    card = teams_payload(message)["attachments"][0]["content"]
    assert any(b.get("text") == next_update for b in card["body"])
    assert any(b["text"]["text"] == next_update for b in slack_payload(message)["blocks"] if "text" in b
               and b["type"] == "section")

    context, message = _message("escalation_opened")
    reason = next(b for b in message.blocks if b.startswith("Why it was escalated"))
    due = next(b for b in message.blocks if b.startswith("Acknowledge by"))
    description = issue_description(delivery("escalation_opened", context, message, "jira"))
    texts = ["".join(n.get("text", "") for n in p.get("content", []) if n.get("type") == "text")
             for p in description["content"] if p["type"] == "paragraph"]
    assert due in texts and reason in texts  # whole, while the handoff's logs were shortened
    logs = description["content"][[i for i, n in enumerate(description["content"])
                                   if n["type"] == "heading"][3] + 1]
    assert logs["type"] == "codeBlock" and logs["content"][0]["text"].endswith("…")
