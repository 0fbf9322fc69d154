"""Jira Cloud (REST v3): one issue per escalation, then a comment per later message.

The first Jira notification of an escalation creates the issue (summary
``[P1] <title>``, labels priority + ``escalation``, the Jira priority the policy maps the
escalation's priority to (``jira.priorities``), and an Atlassian Document
Format description with the handoff context: customer, impact, ticket history,
error logs, integration id, steps to reproduce) and records its key in
``jira_issues``; every later one comments on that issue. The contact's target
is the project key (default ``ESCALATION_JIRA_PROJECT``). Each comment posted is recorded in
``jira_own_comments`` with the account Jira says wrote it, so the back-sync
(``escalations/api/jira.py``) never turns it into a note.

Creation is guarded against doubles: the key is looked up first, and the
create runs under a Postgres advisory lock per escalation (held on a pooled
connection, outside any transaction, and released with it if the worker
dies; see ``escalations/db/jira.py``), so two attempts never both create.
Jira offers no idempotent create; the ``Idempotency-Key`` header is sent
anyway for proxies and audit logs.

The summary is one line of at most 255 characters; description and comments stay within
Jira's 32,767 characters (the handoff's long texts are shortened first, the deadline and
reason lines last). An issue key only goes into a URL path once it is checked to be one
(``PROJECT-123``), whether it comes from Jira's answer or from ``jira_issues``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx

from activities.channels import (
    IDEMPOTENCY_HEADER,
    TRUNCATED,
    Delivery,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SendResult,
    encode,
    header_value,
    host_of,
    post,
    prepared,
)
from activities.templates import (
    Bullets,
    Link,
    Rendered,
    add_block_texts,
    fit,
    handoff_sections,
    jira_labels,
    jira_summary,
    utf16_units,
)
from escalations.db import jira as jira_issues
from escalations.settings import NotificationSettings

log = logging.getLogger(__name__)

PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
# An issue key goes into a URL path: nothing but PROJECT-123 may (no "/", "..", "?", "%").
ISSUE_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,63}-[1-9][0-9]{0,17}$")


def checked_issue_key(key: Any, where: str) -> str:
    """``key`` if it is a Jira issue key, else a permanent failure naming ``where`` it came from."""
    if not isinstance(key, str) or not ISSUE_KEY.fullmatch(key):
        raise PermanentDeliveryError(f"not a Jira issue key {where}: {str(key)[:80]!r}")
    return key


# -- Atlassian Document Format ---------------------------------------------
#
# ADF is a tree of typed nodes: text is never parsed as markup, so nothing a user wrote can
# become a link or a macro; links are marks with a safe href (``activities.templates.link``).


def text_node(text: str, *marks: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": text}
    if marks:
        node["marks"] = list(marks)
    return node


def paragraph(text: str, *marks: dict[str, Any]) -> dict[str, Any]:
    """A paragraph; line breaks become hard breaks (ADF text nodes hold no newlines)."""
    content: list[dict[str, Any]] = []
    for index, line in enumerate(text.split("\n")):
        if index:
            content.append({"type": "hardBreak"})
        if line:
            content.append(text_node(line, *marks))
    return {"type": "paragraph", "content": content}


def heading(text: str, level: int = 3) -> dict[str, Any]:
    return {"type": "heading", "attrs": {"level": level}, "content": [text_node(text)]}


def code_block(text: str) -> dict[str, Any]:
    return {"type": "codeBlock", "content": [text_node(text)]}


def link_paragraph(link: Link, label: str | None = None) -> dict[str, Any]:
    return {
        "type": "paragraph",
        "content": [text_node(label or link.label, {"type": "link", "attrs": {"href": link.url}})],
    }


def bullet_list(items: list[str]) -> dict[str, Any]:
    return {
        "type": "bulletList",
        "content": [{"type": "listItem", "content": [paragraph(item)]} for item in items],
    }


def doc(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "doc", "version": 1, "content": content}


# Jira refuses a description or comment longer than 32,767 characters. Counted on the ADF
# document as sent and in UTF-16 units (Java's String.length), never fewer than characters.
MAX_DOCUMENT_CHARS = 32_767


def _message_texts(message: Rendered) -> tuple[list[str], set[int]]:
    """The message's texts in document order, and which are deadline or reason lines."""
    texts, kept = [message.subject], {0}
    add_block_texts(message.blocks, texts, kept)
    if message.link is not None:
        texts.append(message.link.label)
    return texts, kept


def _message_nodes(message: Rendered, parts: Iterator[str]) -> list[dict[str, Any]]:
    nodes = [paragraph(next(parts), {"type": "strong"})]
    for block in message.blocks:
        if isinstance(block, Bullets):
            nodes.append(bullet_list([next(parts) for _ in block.items]))
        elif isinstance(block, Link):
            nodes.append(link_paragraph(block, next(parts)))
        else:
            nodes.append(paragraph(next(parts)))
    return nodes


def _ui_link(message: Rendered, parts: Iterator[str]) -> list[dict[str, Any]]:
    return [link_paragraph(message.link, next(parts))] if message.link is not None else []


def _action_links(message: Rendered) -> list[dict[str, Any]]:
    """A page's action links, one paragraph each (labels are ours, never shortened)."""
    return [link_paragraph(Link(action.label, action.url)) for action in message.actions]


def _within_limit(texts: list[str], kept: set[int], build: Callable[[Iterator[str]], dict[str, Any]]) -> dict[str, Any]:
    fitted = fit(texts, lambda ts: utf16_units(encode(build(iter(ts))).decode()), MAX_DOCUMENT_CHARS, kept=kept)
    return build(iter(fitted))


def issue_description(delivery: Delivery) -> dict[str, Any]:
    """The message, then the handoff context; the handoff's long texts are shortened first."""
    message = delivery.message
    sections = handoff_sections(delivery.intent.context)
    texts, kept = _message_texts(message)
    link_label = [texts.pop()] if message.link is not None else []
    texts = [*texts, *(section.text for section in sections), *link_label]

    def build(parts: Iterator[str]) -> dict[str, Any]:
        nodes = _message_nodes(message, parts) + _action_links(message)
        for section in sections:
            nodes.append(heading(section.title))
            text = next(parts)
            nodes.append(code_block(text) if section.code else paragraph(text))
        return doc(nodes + _ui_link(message, parts))

    return _within_limit(texts, kept, build)


def comment_body(delivery: Delivery) -> dict[str, Any]:
    message = delivery.message
    texts, kept = _message_texts(message)
    return _within_limit(texts, kept, lambda parts: doc(
        _message_nodes(message, parts) + _action_links(message) + _ui_link(message, parts)))


def issue_fields(delivery: Delivery, project: str, issue_type: str) -> dict[str, Any]:
    context = delivery.intent.context
    description = delivery.payload["description"] if delivery.payload else issue_description(delivery)
    fields: dict[str, Any] = {
        "project": {"key": project},
        "summary": jira_summary(context),
        "issuetype": {"name": issue_type},
        "labels": jira_labels(context),
        "description": description,
    }
    # The Jira priority the policy maps the escalation's priority to (``jira.priorities``).
    priority = context.get("jira_priority")
    if isinstance(priority, str) and priority:
        fields["priority"] = {"name": priority}
    return fields


def _documents(delivery: Delivery) -> dict[str, Any]:
    """Both documents a Jira delivery may send, made before anything is sent."""
    return {"description": issue_description(delivery), "comment": comment_body(delivery)}


# -- sender ----------------------------------------------------------------

class JiraSender:
    def __init__(self, settings: NotificationSettings, http: httpx.AsyncClient, pool: asyncpg.Pool):
        self._settings = settings
        self._http = http
        self._pool = pool

    def _config(self) -> tuple[str, httpx.BasicAuth]:
        s = self._settings
        missing = [
            name
            for name, value in (
                ("ESCALATION_JIRA_BASE_URL", s.jira_base_url),
                ("ESCALATION_JIRA_EMAIL", s.jira_email),
                ("ESCALATION_JIRA_API_TOKEN", s.jira_api_token),
            )
            if not value
        ]
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            raise PermanentDeliveryError(f"Jira is not configured: {', '.join(missing)} {verb} not set")
        assert s.jira_base_url and s.jira_email and s.jira_api_token
        auth = httpx.BasicAuth(s.jira_email, s.jira_api_token.get_secret_value())
        return s.jira_base_url.rstrip("/"), auth

    def _project(self, delivery: Delivery) -> str:
        project = delivery.intent.target or self._settings.jira_project
        if not project:
            raise PermanentDeliveryError(
                "no Jira project: the contact has no target and ESCALATION_JIRA_PROJECT is not set"
            )
        if not PROJECT_KEY.match(project):
            raise PermanentDeliveryError(f"not a Jira project key: {project!r} (e.g. ESC)")
        return project

    async def _post(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        base, auth = self._config()
        response = await post(
            self._http,
            f"{base}{path}",
            describe=f"Jira {host_of(base)}",
            timeout=self._settings.request_timeout,
            content=encode(body),
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                IDEMPOTENCY_HEADER: header_value(key),
            },
            max_body=self._settings.max_response_bytes,
            auth=auth,
        )
        if response.extensions.get(TRUNCATED):
            raise PermanentDeliveryError(
                f"Jira {host_of(base)} answered HTTP {response.status_code} with more than "
                f"{self._settings.max_response_bytes} bytes (ESCALATION_NOTIFY_MAX_RESPONSE_BYTES)"
            )
        try:
            answer = response.json()
        except ValueError:
            raise PermanentDeliveryError(
                f"Jira {host_of(base)} answered HTTP {response.status_code} without JSON"
            ) from None
        if not isinstance(answer, dict):
            raise PermanentDeliveryError(f"Jira {host_of(base)} answered with unexpected JSON")
        return answer

    def prepare(self, delivery: Delivery) -> Delivery:
        return prepared(delivery, _documents)

    async def send(self, delivery: Delivery) -> SendResult:
        self._config()
        delivery = self.prepare(delivery)
        intent = delivery.intent
        async with self._pool.acquire() as conn:
            issue_key = await jira_issues.issue_key(conn, intent.escalation_id)
        if issue_key is None:
            issue_key = await self._create_once(delivery)
            if issue_key is not None:
                return SendResult(issue_key, jira_key=issue_key)
            async with self._pool.acquire() as conn:
                issue_key = await jira_issues.issue_key(conn, intent.escalation_id)
            assert issue_key is not None
        issue_key = checked_issue_key(issue_key, f"recorded for escalation {intent.escalation_id}")
        answer = await self._post(
            f"/rest/api/3/issue/{issue_key}/comment", {"body": delivery.payload["comment"]}, intent.key
        )
        comment_id = answer.get("id")
        if not comment_id:
            raise PermanentDeliveryError(
                f"Jira created no comment on {issue_key} (no id in the answer)"
            )
        await self._remember_own_comment(str(comment_id), issue_key, answer.get("author"), intent.key)
        return SendResult(f"{issue_key}/comment/{comment_id}", jira_key=issue_key)

    async def _remember_own_comment(self, comment_id: str, issue_key: str, author: Any, key: str) -> None:
        """Record the comment (and the account Jira says wrote it) so the back-sync never makes it a note.

        The comment is in Jira already: failing the delivery now would post it again on the
        retry, so a failure to record it is logged, not raised. The back-sync then still knows
        the account from comments recorded earlier, or from ESCALATION_JIRA_ACCOUNT_ID.
        """
        account = author.get("accountId") if isinstance(author, dict) else None
        try:
            async with self._pool.acquire() as conn:
                await jira_issues.record_own_comment(conn, comment_id, issue_key,
                                                     account if isinstance(account, str) else None, key)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as err:
            log.warning("Jira comment %s on %s was posted but not recorded as ours (%s: %s); "
                        "if it comes back through the webhook it may become a note",
                        comment_id, issue_key, type(err).__name__, err)

    async def _create_once(self, delivery: Delivery) -> str | None:
        """Create and record the issue; None if it already existed once the lock was held."""
        intent = delivery.intent
        project = self._project(delivery)
        async with jira_issues.creation_lock(self._pool, intent.escalation_id) as conn:
            if conn is None:
                raise RetryableDeliveryError(
                    f"another attempt is creating the Jira issue of escalation {intent.escalation_id}",
                    retry_after=1.0,
                )
            if await jira_issues.issue_key(conn, intent.escalation_id) is not None:
                return None
            answer = await self._post(
                "/rest/api/3/issue",
                {"fields": issue_fields(delivery, project, self._settings.jira_issue_type)},
                intent.key,
            )
            created = answer.get("key")
            if not created:
                raise PermanentDeliveryError("Jira created no issue (no key in the answer)")
            created = checked_issue_key(created, "in Jira's answer to the create")
            if not await jira_issues.record_issue(conn, intent.escalation_id, intent.ticket_id, created):
                kept = await jira_issues.issue_key(conn, intent.escalation_id)
                log.warning(
                    "Jira issue %s of escalation %s duplicates %s, which was recorded first",
                    created, intent.escalation_id, kept,
                )
                return kept
            return created
