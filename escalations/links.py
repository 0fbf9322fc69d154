"""Links into Temporal UI: the one place that knows its URL layout, and the saved views.

Temporal UI (2.54, the `temporal` CLI 1.9.1's) keeps saved views and the list's columns in
the browser's local storage, per namespace: no server setting, flag or URL parameter sets
columns, and there are no server-side saved views. What a link can do is add a saved view:
opening ``…/workflows?query=Q&savedQuery=NAME`` stores ``Q`` as the view ``NAME`` in that
browser (what the UI's own *Share* button copies). ``SAVED_VIEWS`` are the views
docs/operations.md publishes, as such links (``python -m escalations.links`` prints the
table); ``LIST_COLUMNS`` the columns it tells an operator to add once (and
``COLUMNS_TO_REMOVE`` the ones to remove).

Also the signed action links in pages (``ActionSigner``, ``action_url``): their URL layout under
``ESCALATION_PUBLIC_URL`` and their tokens (docs/responders.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlencode, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ESCALATIONS = 'WorkflowType="EscalationWorkflow"'
"""Escalations only: the namespace also holds the sweep's runs (288 a day at 5 min),
housekeeping and the postmortem children."""
EXAMPLE_OWNER = "Engineering on-call"
EXAMPLE_TIME = "2026-11-27T18:00:00Z"


def workflow_url(ui_url: str | None, namespace: str, workflow_id: str, run_id: str | None = None) -> str | None:
    """The page of a workflow (of one run's history, given ``run_id``); None without a UI address."""
    if not ui_url:
        return None
    link = f"{ui_url.rstrip('/')}/namespaces/{quote(namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"
    return f"{link}/{quote(run_id, safe='')}/history" if run_id else link


def workflows_url(ui_url: str | None, namespace: str, query: str) -> str | None:
    """The list of workflows matching a visibility ``query``; None without a UI address."""
    if not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/namespaces/{quote(namespace, safe='')}/workflows?{urlencode({'query': query})}"


def saved_view_url(ui_url: str | None, namespace: str, name: str, query: str) -> str | None:
    """The list for ``query`` that, opened in a browser, also saves it there as the view ``name``.

    Each opening adds the view again (Temporal UI does not check for one of the same name),
    so it is a link to open once per browser; ``workflows_url`` only shows the list.
    """
    listing = workflows_url(ui_url, namespace, query)
    return None if listing is None else f"{listing}&{urlencode({'savedQuery': name})}"


def literal(value: str) -> str:
    """A string literal of the visibility query language: double quotes, backslash escapes.

    The escapes parse, but SQL visibility (the dev server's SQLite; server 1.32) then matches
    no value holding a double quote or a backslash: owner names should not contain them.
    """
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def escalations_query(*conditions: str) -> str:
    """Escalation runs (``ESCALATIONS``) that meet every condition."""
    return " AND ".join((ESCALATIONS, *conditions))


def my_escalations(owner: str) -> str:
    """The running escalations ``owner`` (an ``EscalationOwner`` value) holds now."""
    return escalations_query('ExecutionStatus="Running"', f"EscalationOwner={literal(owner)}")


RUNNING = 'ExecutionStatus="Running"'

SAVED_VIEWS: tuple[tuple[str, str, str], ...] = (
    ("Escalations", escalations_query(), "every escalation, closed ones included"),
    ("Active escalations", escalations_query(RUNNING), "every escalation not closed yet"),
    ("My escalations", my_escalations(EXAMPLE_OWNER), "the ones an owner holds now (put your name in)"),
    ("Not acknowledged", escalations_query('EscalationStatus="open"', RUNNING),
     "waiting for the owning level to acknowledge"),
    ("Breached, unresolved",
     escalations_query("SlaBreached=true", 'EscalationStatus IN ("open","acknowledged","paused")', RUNNING),
     "resolution SLA breached and not resolved yet"),
    ("Due within the hour", escalations_query(RUNNING, f"NextDeadline < {literal(EXAMPLE_TIME)}"),
     "at risk: the next commitment (acknowledgement, resolution, customer update) falls before the time "
     "(put in now + 1 h)"),
    ("P1 active", escalations_query('EscalationPriority="P1"', RUNNING), "by priority (P1…P4)"),
    ("With Engineering", escalations_query('EscalationLevel="engineering"', RUNNING),
     "by level or department id (tier1, tier2, engineering, management, billing, …)"),
    ("Waiting on the customer", escalations_query('EscalationStatus="paused"'), "paused"),
    ("Postmortem pending", escalations_query('EscalationStatus="resolved"', RUNNING),
     "resolved, the postmortem not completed"),
    ("One customer", escalations_query('CustomerId="acme"'), "one customer's escalations (put the id in)"),
    ("Functional, not closed", escalations_query('EscalationKind="functional"', 'EscalationStatus!="closed"'),
     "routed to a department by category"),
    ("Ended without closing", escalations_query('(ExecutionStatus="Failed" OR ExecutionStatus="Terminated")'),
     "runs that failed or were terminated"),
    ("Postmortems open", 'WorkflowType="PostmortemWorkflow" AND ExecutionStatus="Running"',
     "the postmortem children"),
    ("Criteria sweep runs", 'WorkflowType="CriteriaSweepWorkflow"', "the scheduled sweep (one run per interval)"),
)
"""(name, query, what it lists) of the published views."""

LIST_COLUMNS: tuple[str, ...] = (
    "EscalationOwner", "EscalationLevel", "SlaBreached", "NextDeadline", "EscalationPriority", "EscalationStatus",
    "CustomerId",
)
"""The search attributes an operator adds as columns (Configure Columns), in this order."""
COLUMNS_TO_REMOVE: tuple[str, ...] = ("Run ID", "Type")
"""Default columns that only take room once every view filters on the workflow type."""


def saved_views_table(ui_url: str = "http://localhost:8233", namespace: str = "default") -> str:
    """The markdown table of ``SAVED_VIEWS`` with their saved-view links (docs/operations.md)."""
    rows = ["| view (link: add it to your browser) | query | lists |", "|---|---|---|"]
    for name, query, about in SAVED_VIEWS:
        rows.append(f"| [{name}]({saved_view_url(ui_url, namespace, name, query)}) | `{query}` | {about} |")
    return "\n".join(rows)


# -- signed action links ------------------------------------------------------------
#
# A page carries one link per action its reader may take (acknowledge, escalate, add a note):
# ``<public URL>/actions/<action>/<token>``. The token is the credential: a compact JSON
# payload naming the escalation, the level it was at, the recipient, the action, the
# channel and when it expires, and an HMAC-SHA256 of it. The first of the configured keys
# (``ESCALATION_ACTION_KEY``, comma-separated) signs, every one verifies: add a new key in
# front, and drop the old one once its links have expired. The same payload always gives
# the same token (a page sent again carries the same links), and the token's id, a digest of
# the payload alone, stays the same across a key rotation.

ACTIONS_PATH = "/actions"
ACTION_KEY_MIN = 32
_ACTION_KDF_SALT = b"escalations/action-links/v1"
_SIGNED_PREFIX = b"escalations-action-link.v1."
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,4000}\.[A-Za-z0-9_-]{43}$")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class InvalidLink(ValueError):
    """A token that is not one of ours: malformed, changed, or signed with a key no longer configured."""


@dataclass(frozen=True)
class ActionToken:
    """What a signed action link says: who may do what to which escalation, until when."""

    escalation_id: str
    ticket_id: str
    level: str
    recipient: str
    action: str
    channel: str
    seq: int
    expires_at: datetime

    def __post_init__(self) -> None:
        # Whole seconds, as the token carries it: a token reads back equal to what was signed.
        object.__setattr__(self, "expires_at", self.expires_at.astimezone(UTC).replace(microsecond=0))

    def payload(self) -> bytes:
        document = {"v": 1, "e": self.escalation_id, "t": self.ticket_id, "l": self.level, "r": self.recipient,
                    "a": self.action, "c": self.channel, "s": self.seq, "x": int(self.expires_at.timestamp())}
        return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()

    @property
    def id(self) -> str:
        """The link's id (its one-time-use record): the same under every key."""
        return hashlib.sha256(self.payload()).hexdigest()[:32]

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_action_key(secret: str) -> bytes:
    """The HMAC key of one ``ESCALATION_ACTION_KEY`` entry (its own key: never the secret itself)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_ACTION_KDF_SALT, info=b"hmac-sha256").derive(
        secret.encode())


def parse_action_keys(text: str) -> tuple[bytes, ...]:
    """The comma-separated entries of ``ESCALATION_ACTION_KEY``, newest first, each 32+ characters.
    The error names an entry by its position, never by its value."""
    entries = [entry.strip() for entry in text.split(",")]
    keys: list[bytes] = []
    for number, entry in enumerate(entries, start=1):
        if not entry:
            continue
        if len(entry) < ACTION_KEY_MIN:
            raise ValueError(f"entry {number} is shorter than {ACTION_KEY_MIN} characters "
                             "(make one: openssl rand -hex 32)")
        keys.append(derive_action_key(entry))
    if not keys:
        raise ValueError("holds no key")
    return tuple(keys)


class ActionSigner:
    """Signs with the first key, verifies with any (``keys`` from ``parse_action_keys``)."""

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        if not keys:
            raise ValueError("an ActionSigner needs at least one key")
        self._keys = keys

    def sign(self, token: ActionToken) -> str:
        payload = _b64(token.payload())
        mac = hmac.HMAC(self._keys[0], hashes.SHA256())
        mac.update(_SIGNED_PREFIX + payload.encode())
        return f"{payload}.{_b64(mac.finalize())}"

    def verify(self, text: str) -> ActionToken:
        """The token ``text`` holds; ``InvalidLink`` unless one of the keys signed exactly it."""
        if not _TOKEN_SHAPE.match(text):
            raise InvalidLink("this is not an action link (malformed)")
        payload, signature = text.split(".")
        presented = _unb64(signature)
        matched = False
        for key in self._keys:  # every key is tried (no early exit), each compared in constant time
            mac = hmac.HMAC(key, hashes.SHA256())
            mac.update(_SIGNED_PREFIX + payload.encode())
            try:
                mac.verify(presented)
                matched = True
            except InvalidSignature:
                pass
        if not matched:
            raise InvalidLink("this link's signature does not match: it was changed, or it was signed with a key "
                              "that is no longer configured")
        try:
            document = json.loads(_unb64(payload))
            token = ActionToken(
                escalation_id=str(document["e"]), ticket_id=str(document["t"]), level=str(document["l"]),
                recipient=str(document["r"]), action=str(document["a"]), channel=str(document["c"]),
                seq=int(document["s"]), expires_at=datetime.fromtimestamp(int(document["x"]), UTC))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidLink(f"this action link's content is not readable ({type(exc).__name__})") from None
        if token.payload() != _unb64(payload):
            raise InvalidLink("this action link's content is not in its one form")
        return token


def check_public_url(url: str) -> str:
    """``ESCALATION_PUBLIC_URL`` without a trailing slash: an absolute ``https:`` URL (``http:`` only
    on a loopback host, for the dev stack), no query or fragment."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("is not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an absolute https:// URL (e.g. https://escalations.example.com)")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ValueError("must use https (http only for localhost, 127.0.0.1 or ::1): people open it from "
                         "their mail and chat")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or a fragment")
    return url.rstrip("/")


def is_loopback_http(url: str) -> bool:
    """An ``http:`` URL on this machine (the dev stack's public URL)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme == "http" and parts.hostname in _LOOPBACK


def action_url(public_url: str, action: str, token: str) -> str:
    """The absolute link of one action: ``<public URL>/actions/<action>/<token>``."""
    return f"{public_url.rstrip('/')}{ACTIONS_PATH}/{quote(action, safe='')}/{token}"


if __name__ == "__main__":
    print(saved_views_table())
