"""Recording the customer's CSAT score for an escalation (one per escalation).

The score arrives after the resolution, through the API or the CLI, usually
long after the workflow run has completed; this module needs only the read
model and the pinned policy document, never the run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
from pydantic import TypeAdapter, ValidationError

from schemas.durations import Duration, format_duration
from schemas.reporting import CsatRecord, CsatSubmission

DEFAULT_CSAT_WINDOW = timedelta(days=7)
_DURATION = TypeAdapter(Duration)


class CsatError(Exception):
    """A CSAT score that cannot be recorded; the message says why."""


class NoEscalation(CsatError):
    """The ticket has never been escalated."""


class NotResolved(CsatError):
    """The ticket's latest escalation is not resolved yet."""


class OutsideWindow(CsatError):
    """The score came after the policy's ``csat_window`` had closed."""


class AlreadyRecorded(CsatError):
    """The escalation already has its score."""


_LATEST = """
SELECT e.escalation_id, e.ticket_id, e.status, e.resolved_at, e.policy_name, e.policy_version,
       jsonb_typeof(p.document -> 'csat_window') AS csat_window_type,
       p.document ->> 'csat_window' AS csat_window
  FROM escalations e
  LEFT JOIN policy_versions p ON p.name = e.policy_name AND p.version = e.policy_version
 WHERE e.ticket_id = $1
 ORDER BY e.opened_at DESC, e.escalation_id DESC
 LIMIT 1
"""

_INSERT = """
INSERT INTO csat_responses (escalation_id, ticket_id, score, comment, received_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (escalation_id) DO NOTHING
RETURNING escalation_id, ticket_id, score, comment, received_at
"""


def csat_window(text: str | None, json_type: str | None = "string") -> timedelta:
    """The policy's ``csat_window`` from ``policy_versions.document`` (default 7d).

    The document is the pinned policy dumped as JSON: an ISO-8601 duration (``P7D``),
    though a short form (``7d``) or a number of seconds is read too.
    """
    if text is None or json_type in (None, "null"):
        return DEFAULT_CSAT_WINDOW
    value: Any = float(text) if json_type == "number" else text
    try:
        return _DURATION.validate_python(value)
    except ValidationError as exc:
        raise ValueError(f"policy document has an invalid csat_window {text!r}") from exc


async def record_csat(
    conn: asyncpg.Connection, ticket_id: str, submission: CsatSubmission, now: datetime
) -> CsatRecord:
    """Store the score for the ticket's latest escalation.

    Raises ``NoEscalation``, ``NotResolved``, ``OutsideWindow`` (``now`` later than the
    resolution plus the pinned policy's ``csat_window``) or ``AlreadyRecorded``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    row = await conn.fetchrow(_LATEST, ticket_id)
    if row is None:
        raise NoEscalation(f"ticket {ticket_id} has no escalation")
    if row["resolved_at"] is None:
        raise NotResolved(
            f"escalation of ticket {ticket_id} is {row['status']}; CSAT is accepted once it is resolved"
        )
    window = csat_window(row["csat_window"], row["csat_window_type"])
    closes = row["resolved_at"] + window
    if now > closes:
        raise OutsideWindow(
            f"the CSAT window of ticket {ticket_id} closed at {closes.isoformat()} "
            f"({format_duration(window)} after resolution under policy "
            f"{row['policy_name']} v{row['policy_version']})"
        )
    try:
        stored = await conn.fetchrow(
            _INSERT, row["escalation_id"], ticket_id, submission.score, submission.comment, now
        )
    except asyncpg.UniqueViolationError:
        stored = None
    if stored is None:
        existing = await conn.fetchrow(
            "SELECT score, received_at FROM csat_responses WHERE escalation_id = $1",
            row["escalation_id"],
        )
        detail = (
            f" (score {existing['score']} at {existing['received_at'].isoformat()})" if existing else ""
        )
        raise AlreadyRecorded(
            f"CSAT for the escalation of ticket {ticket_id} was already recorded{detail}"
        )
    return CsatRecord.model_validate(dict(stored))
