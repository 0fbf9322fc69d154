"""Links into Temporal UI: the one place that knows its URL layout, and the saved views.

Temporal UI (2.54, the `temporal` CLI 1.9.1's) keeps saved views and the list's columns in
the browser's local storage, per namespace: no server setting, flag or URL parameter sets
columns, and there are no server-side saved views. What a link can do is add a saved view:
opening ``…/workflows?query=Q&savedQuery=NAME`` stores ``Q`` as the view ``NAME`` in that
browser (what the UI's own *Share* button copies). ``SAVED_VIEWS`` are the views
docs/operations.md publishes, as such links (``python -m escalations.links`` prints the
table); ``LIST_COLUMNS`` the columns it tells an operator to add once (and
``COLUMNS_TO_REMOVE`` the ones to remove).
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

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


if __name__ == "__main__":
    print(saved_views_table())
