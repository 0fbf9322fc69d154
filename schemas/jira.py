"""Jira Cloud's webhook payloads as the back-sync reads them, and what each asks of an escalation.

``POST /integrations/jira/webhook`` (``escalations/api/jira.py``) receives what a Jira admin
webhook sends. Two events matter:

* ``comment_created`` (and ``jira:issue_updated`` with ``issue_event_type_name``
  ``issue_commented``, which carries the same comment): ``comment`` with ``id``,
  ``author.accountId``, ``author.displayName`` and ``body`` (a string, or an Atlassian
  Document Format document), and the ``issue`` with its ``key``;
* ``jira:issue_updated`` whose ``changelog.items`` hold a ``status`` item: the transition
  (``fromString`` → ``toString``), made by ``user``; the issue's ``fields.resolution`` (or a
  ``resolution`` item) says how it was resolved.

Payloads vary by site (custom fields, apps add their own), so only these fields are read and
everything else is ignored. ``read_event`` turns a payload into a ``CommentEvent``, a
``TransitionEvent`` or ``Ignored``; ``decide`` turns an event into a note, a resolve, or
``Ignored``, by the pinned policy's ``jira`` section. Both are pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from schemas.policy import JiraSync
from schemas.text import one_line

NOTE_MAX = 8_000  # AddNoteCommand.text
NAME_MAX = 200  # Name: by / author
VIA_PREFIX = "jira:"
UNKNOWN_USER = "Jira user"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _as_text(value: Any) -> Any:
    """Ids arrive as strings; numbers are read as their text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class JiraUser(_Lenient):
    accountId: str | None = None
    displayName: str | None = None


class JiraComment(_Lenient):
    id: str
    author: JiraUser | None = None
    body: Any = None

    _id_text = field_validator("id", mode="before")(_as_text)


class JiraChangeItem(_Lenient):
    field: str | None = None
    fieldId: str | None = None
    fromString: str | None = None
    toString: str | None = None


class JiraChangelog(_Lenient):
    id: str | None = None
    items: list[JiraChangeItem] = []

    _id_text = field_validator("id", mode="before")(_as_text)


class JiraNamed(_Lenient):
    name: str | None = None


class JiraIssueFields(_Lenient):
    status: JiraNamed | None = None
    resolution: JiraNamed | None = None


class JiraIssue(_Lenient):
    key: str
    id: str | None = None
    fields: JiraIssueFields | None = None

    _id_text = field_validator("id", mode="before")(_as_text)


class JiraWebhook(_Lenient):
    """The fields of a Jira webhook body the back-sync uses."""

    webhookEvent: str
    timestamp: int | None = None
    issue_event_type_name: str | None = None
    issue: JiraIssue | None = None
    comment: JiraComment | None = None
    changelog: JiraChangelog | None = None
    user: JiraUser | None = None


# -- what happened ---------------------------------------------------------------------


@dataclass(frozen=True)
class CommentEvent:
    issue_key: str
    comment_id: str
    account_id: str | None
    author: str
    text: str

    @property
    def receipt(self) -> str:
        return f"comment:{self.comment_id}"


@dataclass(frozen=True)
class TransitionEvent:
    issue_key: str
    changelog_id: str | None
    from_status: str | None
    to_status: str
    resolution: str | None
    account_id: str | None
    author: str

    @property
    def receipt(self) -> str | None:
        return f"changelog:{self.changelog_id}" if self.changelog_id else None


@dataclass(frozen=True)
class Ignored:
    reason: str


def _author(user: JiraUser | None) -> tuple[str, str | None]:
    """(display name as one line of at most 200 characters, account id)."""
    name = one_line(user.displayName or "") if user is not None else ""
    account = user.accountId if user is not None and user.accountId else None
    return (name[:NAME_MAX].rstrip() or UNKNOWN_USER), account


def read_event(hook: JiraWebhook) -> CommentEvent | TransitionEvent | Ignored:
    """What a webhook body says happened: a comment, a status transition, or nothing we use."""
    event = hook.webhookEvent
    if hook.issue is None:
        return Ignored(f"{event} names no issue")
    key = hook.issue.key
    commented = event == "comment_created" or (
        event == "jira:issue_updated" and hook.issue_event_type_name == "issue_commented")
    if event == "jira:issue_updated":
        status = next((item for item in (hook.changelog.items if hook.changelog else [])
                       if (item.fieldId or item.field or "").lower() == "status"), None)
        if status is not None and status.toString:
            name, account = _author(hook.user)
            return TransitionEvent(
                issue_key=key, changelog_id=hook.changelog.id if hook.changelog else None,
                from_status=status.fromString, to_status=status.toString, resolution=_resolution(hook),
                account_id=account, author=name)
    if commented:
        if hook.comment is None:
            return Ignored(f"{event} on {key} carries no comment")
        name, account = _author(hook.comment.author)
        text = comment_text(hook.comment.body)
        if not text:
            return Ignored(f"comment {hook.comment.id} on {key} has no text")
        return CommentEvent(issue_key=key, comment_id=hook.comment.id, account_id=account, author=name, text=text)
    if event == "jira:issue_updated":
        return Ignored(f"{event} on {key} changes no status")
    return Ignored(f"event {event} is not used (comment_created and jira:issue_updated are)")


def _resolution(hook: JiraWebhook) -> str | None:
    fields = hook.issue.fields if hook.issue is not None else None
    if fields is not None and fields.resolution is not None and fields.resolution.name:
        return one_line(fields.resolution.name)
    item = next((item for item in (hook.changelog.items if hook.changelog else [])
                 if (item.fieldId or item.field or "").lower() == "resolution" and item.toString), None)
    return one_line(item.toString) if item is not None and item.toString else None


# -- the comment's text ----------------------------------------------------------------

_BLOCKS = {"paragraph", "heading", "blockquote", "codeBlock", "panel", "rule", "mediaSingle", "table",
           "tableRow", "expand", "nestedExpand", "decisionList", "taskList"}


def comment_text(body: Any) -> str:
    """A comment body as plain text: a string as it is; an ADF document with its text nodes,
    line breaks, list items (``- ``), mentions, emoji and links as text. NUL characters (which
    PostgreSQL cannot store) are dropped; at most ``NOTE_MAX`` characters."""
    if isinstance(body, str):
        text = body
    elif isinstance(body, dict):
        text = _adf(body).strip("\n")
    else:
        text = ""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip()
    if len(text) > NOTE_MAX:
        text = text[:NOTE_MAX - 1].rstrip() + "…"
    return text


def _adf(node: Any) -> str:
    if isinstance(node, list):
        return "".join(_adf(child) for child in node)
    if not isinstance(node, dict):
        return ""
    kind = node.get("type")
    attrs = node.get("attrs") if isinstance(node.get("attrs"), dict) else {}
    if kind == "text":
        return str(node.get("text") or "")
    if kind == "hardBreak":
        return "\n"
    if kind == "mention":
        return str(attrs.get("text") or "@someone")
    if kind == "emoji":
        return str(attrs.get("text") or attrs.get("shortName") or "")
    if kind in ("inlineCard", "blockCard", "embedCard"):
        return str(attrs.get("url") or "")
    inner = _adf(node.get("content") or [])
    if kind == "listItem":
        return "- " + inner.strip("\n").replace("\n", "\n  ") + "\n"
    if kind in ("bulletList", "orderedList"):
        return inner + "\n"
    if kind in ("tableCell", "tableHeader"):
        return inner.strip("\n") + " | "
    if kind in _BLOCKS:
        return inner.rstrip("\n") + "\n\n"
    return inner


# -- what it asks of the escalation ----------------------------------------------------


@dataclass(frozen=True)
class Note:
    author: str
    via: str
    text: str
    customer_visible: bool


@dataclass(frozen=True)
class Resolve:
    by: str
    via: str
    root_cause: str
    mitigation: str


def via_of(account_id: str | None) -> str:
    """``jira:<accountId>``: the principal a command from Jira records (at most 200 characters)."""
    return (VIA_PREFIX + (account_id or "unknown"))[:NAME_MAX]


def decide(event: CommentEvent | TransitionEvent, jira: JiraSync) -> Note | Resolve | Ignored:
    """A comment becomes a note (customer-visible only if the policy says so); a transition into
    a status the policy names becomes a note announcing it, or a resolve."""
    via = via_of(event.account_id)
    if isinstance(event, CommentEvent):
        return Note(author=event.author, via=via, text=event.text,
                    customer_visible=jira.comments_customer_visible)
    action = jira.status_action(event.to_status)
    if action is None:
        named = ", ".join(jira.statuses) or "none"
        return Ignored(f"{event.issue_key} moved to {event.to_status!r}, which the policy's jira.statuses "
                       f"does not name (named: {named})")
    if action == "resolve":
        mitigation = jira.resolve_mitigation
        if event.resolution:
            mitigation = f"{mitigation} Jira resolution: {event.resolution}."
        return Resolve(by=event.author, via=via, root_cause=jira.resolve_root_cause, mitigation=mitigation)
    moved = (f"Jira {event.issue_key} moved from {event.from_status} to {event.to_status}"
             if event.from_status else f"Jira {event.issue_key} moved to {event.to_status}")
    resolution = f" (resolution: {event.resolution})" if event.resolution else ""
    return Note(author=event.author, via=via, text=f"{moved}{resolution}.", customer_visible=False)
