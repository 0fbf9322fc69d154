"""The saved views docs/operations.md publishes (``escalations.links.SAVED_VIEWS``).

The table in the docs is the generated one (``python -m escalations.links``), and every
view's query, run on the real dev server's visibility store, lists exactly the runs it
promises: escalation runs are started here with the search attributes a run keeps (no
worker polls their task queue, so they stay as started), next to decoys of other workflow
types, one of them carrying an escalation's attributes. What the views look like in Temporal
UI is tests/test_browser.py's part.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from escalations.links import (
    EXAMPLE_OWNER,
    SAVED_VIEWS,
    literal,
    my_escalations,
    saved_view_url,
    saved_views_table,
)
from schemas import keys
from tests.helpers.paths import ROOT
from tests.helpers.polling import eventually

DOCS = ROOT / "docs" / "operations.md"
APOSTROPHE_OWNER = "Dana O'Neil (Tier 1)"


def test_the_docs_publish_the_generated_table():
    text = DOCS.read_text(encoding="utf-8")
    documented = text.split("<!-- saved-views:start -->")[1].split("<!-- saved-views:end -->")[0].strip()
    assert documented == saved_views_table(), "regenerate it: python -m escalations.links"


def test_a_saved_view_link_carries_the_query_and_the_name():
    link = saved_view_url("http://ui:8233/", "prod ns", "My escalations", my_escalations("Alex Chen"))
    assert link == ("http://ui:8233/namespaces/prod%20ns/workflows?query=WorkflowType%3D%22EscalationWorkflow%22"
                    "+AND+ExecutionStatus%3D%22Running%22+AND+EscalationOwner%3D%22Alex+Chen%22"
                    "&savedQuery=My+escalations")
    assert saved_view_url(None, "default", "x", "y") is None
    assert literal('a "b" \\ c') == '"a \\"b\\" \\\\ c"'


def attributes(**values: Any) -> TypedSearchAttributes:
    by_name = {key.name: key for key in keys.SEARCH_ATTRIBUTES}
    return TypedSearchAttributes([SearchAttributePair(by_name[name], value) for name, value in values.items()])


def escalation(status: str, owner: str, level: str, priority: str, customer: str, *, kind: str = "priority",
               breached: bool = False, next_deadline: datetime | None = None) -> TypedSearchAttributes:
    values: dict[str, Any] = dict(
        EscalationStatus=status, EscalationOwner=owner, EscalationLevel=level, EscalationPriority=priority,
        CustomerId=customer, EscalationKind=kind, EscalationCategory="integration", SlaBreached=breached)
    if next_deadline is not None:
        values["NextDeadline"] = next_deadline
    return attributes(**values)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 27, hour, minute, tzinfo=timezone.utc)


# The runs by short name: (workflow type, search attributes, terminate it).
RUNS: dict[str, tuple[str, TypedSearchAttributes | None, bool]] = {
    "engineering": ("EscalationWorkflow", escalation("open", EXAMPLE_OWNER, "engineering", "P1", "acme",
                                                     next_deadline=at(17, 30)), False),
    "billing": ("EscalationWorkflow", escalation("acknowledged", "Billing desk", "billing", "P1", "initech",
                                                 kind="functional", breached=True, next_deadline=at(19)), False),
    "paused": ("EscalationWorkflow", escalation("paused", "Support on-call", "tier1", "P2", "acme"), False),
    "resolved": ("EscalationWorkflow", escalation("resolved", "Tier 2 on-call", "tier2", "P2", "globex"), False),
    "terminated": ("EscalationWorkflow", escalation("open", EXAMPLE_OWNER, "engineering", "P1", "globex",
                                                    next_deadline=at(17)), True),
    "quoted": ("EscalationWorkflow", escalation("acknowledged", APOSTROPHE_OWNER, "tier1", "P3", "globex",
                                                next_deadline=at(21)), False),
    # Not escalations: the postmortem child, a sweep run, and another type with an escalation's attributes.
    "postmortem": ("PostmortemWorkflow", None, False),
    "sweep": ("CriteriaSweepWorkflow", None, False),
    "lookalike": ("SomethingElse", escalation("open", EXAMPLE_OWNER, "engineering", "P1", "acme",
                                              next_deadline=at(17, 30)), False),
}

EXPECTED: dict[str, set[str]] = {
    "Escalations": {"engineering", "billing", "paused", "resolved", "terminated", "quoted"},
    "Active escalations": {"engineering", "billing", "paused", "resolved", "quoted"},
    "My escalations": {"engineering"},
    "Not acknowledged": {"engineering"},
    "Breached, unresolved": {"billing"},
    "Due within the hour": {"engineering"},
    "P1 active": {"engineering", "billing"},
    "With Engineering": {"engineering"},
    "Waiting on the customer": {"paused"},
    "Postmortem pending": {"resolved"},
    "One customer": {"engineering", "paused"},
    "Functional, not closed": {"billing"},
    "Ended without closing": {"terminated"},
    "Postmortems open": {"postmortem"},
    "Criteria sweep runs": {"sweep"},
}


async def test_each_view_lists_what_it_promises(client: Client, task_queue: str):
    assert {name for name, _, _ in SAVED_VIEWS} == set(EXPECTED)
    suffix = uuid.uuid4().hex[:8]
    handles = {}
    try:
        for name, (workflow_type, search_attributes, _) in RUNS.items():
            handles[name] = await client.start_workflow(
                workflow_type, id=f"view-{name}-{suffix}", task_queue=task_queue,
                search_attributes=search_attributes or TypedSearchAttributes.empty)
        for name, (_, _, terminate) in RUNS.items():
            if terminate:
                await handles[name].terminate(reason="ended without closing")
        names = {handle.id: name for name, handle in handles.items()}

        async def listed(query: str) -> set[str]:
            # Only this test's runs: the session's server holds other tests' escalations too.
            return {names[w.id] async for w in client.list_workflows(f'({query}) AND TaskQueue="{task_queue}"')}

        async def all_indexed() -> None:
            assert await listed('WorkflowType!=""') == set(RUNS)
            # Visibility records the termination a moment after it.
            assert await listed('ExecutionStatus="Terminated"') == {n for n, run in RUNS.items() if run[2]}

        await eventually(all_indexed, timeout=15)
        for name, query, _ in SAVED_VIEWS:
            assert await listed(query) == EXPECTED[name], name
        # An owner's name with an apostrophe and brackets is still one literal.
        assert await listed(my_escalations(APOSTROPHE_OWNER)) == {"quoted"}
    finally:
        for name, handle in handles.items():
            if not RUNS[name][2]:
                await handle.terminate(reason="test done")

