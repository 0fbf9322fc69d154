"""Jira Cloud (REST v3): one issue per escalation, then a comment per later message.

The first Jira notification of an escalation creates the issue (summary
``[P1] <title>``, labels priority + ``escalation``, and an Atlassian Document
Format description with the handoff context: customer, impact, ticket history,
error logs, integration id, steps to reproduce) and records its key in
``jira_issues``; every later one comments on that issue. The contact's target
is the project key (default ``ESCALATION_JIRA_PROJECT``).

Creation is guarded against doubles: the key is looked up first, and the
create runs under a Postgres advisory lock per escalation (held on a pooled
connection, outside any transaction, and released with it if the worker
dies; see ``escalations/db/jira.py``), so two attempts never both create.
Jira offers no idempotent create; the ``Idempotency-Key`` header is sent
anyway for proxies and audit logs.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import asyncpg
import httpx

from activities.channels import (
    IDEMPOTENCY_HEADER,
    Delivery,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SendResult,
    encode,
    host_of,
    post,
)
from activities.templates import (
    Bullets,
    Link,
    Rendered,
    handoff_sections,
    jira_labels,
    jira_summary,
)
from escalations.db import jira as jira_issues
from escalations.settings import NotificationSettings

log = logging.getLogger(__name__)

PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


# -- Atlassian Document Format ---------------------------------------------


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


def link_paragraph(link: Link) -> dict[str, Any]:
    return {
        "type": "paragraph",
        "content": [text_node(link.label, {"type": "link", "attrs": {"href": link.url}})],
    }


def bullet_list(items: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "bulletList",
        "content": [{"type": "listItem", "content": [paragraph(item)]} for item in items],
    }


def doc(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "doc", "version": 1, "content": content}


def message_nodes(message: Rendered) -> list[dict[str, Any]]:
    nodes = [paragraph(message.subject, {"type": "strong"})]
    for block in message.blocks:
        if isinstance(block, Bullets):
            nodes.append(bullet_list(block.items))
        elif isinstance(block, Link):
            nodes.append(link_paragraph(block))
        else:
            nodes.append(paragraph(block))
    return nodes


def issue_description(delivery: Delivery) -> dict[str, Any]:
    nodes = message_nodes(delivery.message)
    for section in handoff_sections(delivery.intent.context):
        nodes.append(heading(section.title))
        nodes.append(code_block(section.text) if section.code else paragraph(section.text))
    if delivery.message.link is not None:
        nodes.append(link_paragraph(delivery.message.link))
    return doc(nodes)


def comment_body(delivery: Delivery) -> dict[str, Any]:
    nodes = message_nodes(delivery.message)
    if delivery.message.link is not None:
        nodes.append(link_paragraph(delivery.message.link))
    return doc(nodes)


def issue_fields(delivery: Delivery, project: str, issue_type: str) -> dict[str, Any]:
    context = delivery.intent.context
    return {
        "project": {"key": project},
        "summary": jira_summary(context),
        "issuetype": {"name": issue_type},
        "labels": jira_labels(context),
        "description": issue_description(delivery),
    }


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
                IDEMPOTENCY_HEADER: key,
            },
            auth=auth,
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

    async def send(self, delivery: Delivery) -> SendResult:
        self._config()
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
        answer = await self._post(
            f"/rest/api/3/issue/{issue_key}/comment", {"body": comment_body(delivery)}, intent.key
        )
        comment_id = answer.get("id")
        if not comment_id:
            raise PermanentDeliveryError(
                f"Jira created no comment on {issue_key} (no id in the answer)"
            )
        return SendResult(f"{issue_key}/comment/{comment_id}", jira_key=issue_key)

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
            if not await jira_issues.record_issue(conn, intent.escalation_id, intent.ticket_id, created):
                kept = await jira_issues.issue_key(conn, intent.escalation_id)
                log.warning(
                    "Jira issue %s of escalation %s duplicates %s, which was recorded first",
                    created, intent.escalation_id, kept,
                )
                return kept
            return created
