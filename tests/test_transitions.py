"""The escalation's decisions as pure functions: every transition, without a server.

A transition depends only on its arguments; these tests give it a state, a time and a
command, and check the state and the events it returns. The server tests check that the
workflow runs them; the checked-in histories that the command sequence is unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.escalation import (
    AcknowledgeCommand,
    AddNoteCommand,
    ApplyPolicyCommand,
    EscalateCommand,
    PauseCommand,
    PostmortemReport,
    ResolveCommand,
    ResumeCommand,
)
from schemas.policy import load_policy_file, load_policy_text
from workflows import events
from workflows import transitions as tr
from workflows.postmortem import PostmortemResult
from tests.helpers.policies import policy_path
from tests.helpers.requests import blog_request

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
S = timedelta(seconds=1)
MS = timedelta(milliseconds=1)


def fast():
    return load_policy_file(policy_path("fast"))


def opened(kind: str = "hierarchical", priority: str = "P1", policy=None, **request) -> tr.Decision:
    return tr.open_escalation(blog_request("T-1", kind=kind, priority=priority, **request), policy or fast(),
                              escalation_id="esc-1", workflow_id="escalation-T-1", at=T0)


def types(decision: tr.Decision) -> list[str]:
    return [c.type for c in decision.changes]


def due(state: tr.RunState) -> dict[str, datetime]:
    return {d.kind: d.at for d in tr.upcoming(state)}


def commit(decision: tr.Decision, at: datetime) -> tr.RunState:
    """What the workflow does with a decision: number its events (and derive deadlines)."""
    events.assemble(decision.state, decision.changes, at, handoff=None, impact={})
    return decision.state


# -- opening --------------------------------------------------------------------


def test_opening_pages_the_entry_level_and_starts_every_clock_at_the_request_time():
    decision = opened()
    state = commit(decision, T0)
    assert types(decision) == ["opened"]
    assert state.view.level == "tier2" and state.view.status == "open"
    assert due(state) == {"ack": T0 + 2 * S, "at_risk": T0 + 45 * S, "breach": T0 + 60 * S, "cadence": T0 + 60 * S}
    notify = decision.changes[0].notify
    assert [(n.audience, n.template, n.responder) for n in notify] == [
        ("owner", "escalation_opened", "tier2"),
        ("customer", "customer_escalated", None),
        ("consulted", "consulted", "management"),
    ]
    assert state.view.consulted[0].level == "management"


def test_a_priority_escalation_pages_the_next_level_too_without_moving():
    state = commit(decision := opened(kind="priority"), T0)
    assert state.view.level == "tier2" and state.view.paged_levels == ["tier2", "engineering"]
    assert state.view.path == []
    assert ("owner", "engineering") in [(n.audience, n.responder) for n in decision.changes[0].notify]


def test_a_functional_escalation_opens_at_its_route_and_an_unknown_category_is_unroutable():
    assert commit(opened(kind="functional", category="billing"), T0).view.level == "billing"
    with pytest.raises(tr.Unroutable, match="no route"):
        opened(kind="functional", category="gardening")


def test_opening_does_not_touch_anything_it_was_given():
    policy = fast()
    before = policy.model_dump()
    opened(policy=policy)
    assert policy.model_dump() == before


# -- deadlines ------------------------------------------------------------------


def test_no_acknowledgement_climbs_to_the_next_level_as_of_the_deadline():
    state = commit(opened(), T0)
    ack_due = T0 + 2 * S
    decision = tr.deadlines(state, ack_due, tr.due_by(state, ack_due))
    moved = commit(decision, ack_due)
    assert types(decision) == ["escalated"]
    assert moved.view.level == "engineering"
    [entry] = moved.view.path
    assert (entry.from_level, entry.to_level, entry.auto, entry.at) == ("tier2", "engineering", True, ack_due)
    assert entry.reason == "no acknowledgement from tier2 within 2s"
    # The new level's clock starts at the deadline, whenever the task acting on it ran.
    assert due(moved)["ack"] == ack_due + 2 * S
    assert state.view.level == "tier2", "the given state is never changed"


def test_the_same_deadline_decides_the_same_whenever_it_is_acted_on():
    """Replay may run a decision in another workflow task: nothing may depend on that."""
    state = commit(opened(), T0)
    ack_due = T0 + 2 * S
    first = commit(tr.deadlines(state, ack_due, tr.due_by(state, ack_due)), ack_due)
    again = commit(tr.deadlines(state, ack_due, tr.due_by(state, ack_due)), ack_due)
    assert first.model_dump() == again.model_dump()


def test_at_the_last_level_the_deadline_repages_every_ack_within():
    state = commit(opened(), T0)
    for level in ("engineering", "management"):
        at = due(state)["ack"]
        state = commit(tr.deadlines(state, at, tr.due_by(state, at)), at)
        assert state.view.level == level
    at = due(state)["ack"]
    decision = tr.deadlines(state, at, tr.due_by(state, at))
    state = commit(decision, at)
    assert types(decision) == ["ack_reminder"] and state.view.level == "management"
    assert state.view.counts.ack_reminders == 1 and due(state)["ack"] == at + 3 * S


def test_deadlines_a_millisecond_apart_are_two_decisions():
    policy = load_policy_text(policy_path("fast").read_text().replace(
        "P1: {entry_level: tier2, resolve_within: 60s, customer_update_every: 60s",
        "P1: {entry_level: tier2, resolve_within: 60s, customer_update_every: 2001ms"))
    state = commit(opened(policy=policy), T0)
    ack_due, cadence_due = T0 + 2 * S, T0 + 2 * S + MS
    assert due(state)["cadence"] == cadence_due
    assert tr.due_by(state, ack_due) == {"ack"}
    assert tr.due_by(state, ack_due - MS) == set()
    assert tr.due_by(state, cadence_due) == {"ack", "cadence"}
    first = tr.deadlines(state, ack_due, tr.due_by(state, ack_due))
    state = commit(first, ack_due)
    assert types(first) == ["escalated"]
    second = tr.deadlines(state, cadence_due, tr.due_by(state, cadence_due))
    state = commit(second, cadence_due)
    assert types(second) == ["customer_updated"]
    # The cadence restarts from its own deadline, not from when it was acted on.
    assert due(state)["cadence"] == cadence_due + 2001 * MS


def test_deadlines_due_at_the_same_instant_are_one_decision():
    policy = load_policy_text(policy_path("fast").read_text().replace(
        "P1: {entry_level: tier2, resolve_within: 60s, customer_update_every: 60s",
        "P1: {entry_level: tier2, resolve_within: 60s, customer_update_every: 2s"))
    state = commit(opened(policy=policy), T0)
    at = T0 + 2 * S
    decision = tr.deadlines(state, at, tr.due_by(state, at))
    assert types(decision) == ["escalated", "customer_updated"]


def test_breach_marks_and_pages_breach_notifies_without_moving_the_level():
    state = commit(opened(), T0)
    state = commit(tr.acknowledge(state, AcknowledgeCommand(by="dana"), T0 + S), T0 + S)
    at_risk = due(state)["at_risk"]
    decision = tr.deadlines(state, at_risk, tr.due_by(state, at_risk))
    state = commit(decision, at_risk)
    assert types(decision) == ["sla_at_risk"] and state.view.sla_at_risk and not state.view.sla_breached
    breach = due(state)["breach"]
    decision = tr.deadlines(state, breach, tr.due_by(state, breach))
    state = commit(decision, breach)
    assert "sla_breached" in types(decision)
    assert state.view.sla_breached and state.view.breached_at == breach and state.view.level == "tier2"
    assert decision.changes[0].notify[0].responder == "management"


def test_a_cadence_tells_the_customer_and_the_owner_and_never_moves_the_level():
    state = commit(opened(), T0)
    state = commit(tr.acknowledge(state, AcknowledgeCommand(by="dana"), T0 + S), T0 + S)
    at = due(state)["cadence"]
    decision = tr.deadlines(state, at, {"cadence"})
    state = commit(decision, at)
    [change] = decision.changes
    assert change.type == "customer_updated" and change.payload == {"number": 1, "auto": True}
    assert [n.template for n in change.notify] == ["customer_update", "customer_update_due"]
    assert state.view.level == "tier2"


def test_pause_stops_resolution_and_cadence_and_resume_keeps_their_budget():
    state = commit(opened(), T0)
    state = commit(tr.acknowledge(state, AcknowledgeCommand(by="dana"), T0 + S), T0 + S)
    state = commit(tr.pause(state, PauseCommand(by="dana", reason="waiting"), T0 + 10 * S), T0 + 10 * S)
    assert state.view.status == "paused"
    assert "breach" not in due(state) and "cadence" not in due(state)
    state = commit(tr.resume(state, ResumeCommand(by="dana"), T0 + 70 * S), T0 + 70 * S)
    assert state.view.status == "acknowledged" and state.view.paused_total == 60 * S
    assert due(state)["breach"] == T0 + 120 * S


def test_a_pause_past_max_pause_resumes_itself():
    policy = load_policy_text(policy_path("fast").read_text() + "max_pause: 5s\n")
    state = commit(opened(policy=policy), T0)
    state = commit(tr.acknowledge(state, AcknowledgeCommand(by="dana"), T0), T0)
    state = commit(tr.pause(state, PauseCommand(by="dana", reason="waiting"), T0 + S), T0 + S)
    at = due(state)["auto_resume"]
    assert at == T0 + 6 * S
    decision = tr.deadlines(state, at, tr.due_by(state, at))
    assert types(decision) == ["resumed"] and decision.changes[0].payload["auto"]


# -- commands -------------------------------------------------------------------


def test_acknowledge_stops_the_ack_clock_once():
    state = commit(opened(), T0)
    decision = tr.acknowledge(state, AcknowledgeCommand(by="dana"), T0 + S)
    state = commit(decision, T0 + S)
    assert types(decision) == ["acknowledged"] and "ack" not in due(state)
    assert state.view.status == "acknowledged" and state.view.acknowledged_by == "dana"
    with pytest.raises(tr.InvalidCommand, match="already acknowledged at tier2 by dana"):
        tr.check_acknowledge(state, AcknowledgeCommand(by="sam"))


def test_a_consulted_level_acknowledges_for_itself_once():
    state = commit(opened(), T0)
    decision = tr.acknowledge(state, AcknowledgeCommand(by="mia", level="management"), T0 + S)
    state = commit(decision, T0 + S)
    assert types(decision) == ["consulted_acknowledged"] and "ack" in due(state)
    with pytest.raises(tr.InvalidCommand, match="already acknowledged as consulted"):
        tr.check_acknowledge(state, AcknowledgeCommand(by="mia", level="management"))
    with pytest.raises(tr.InvalidCommand, match="cannot acknowledge as billing"):
        tr.check_acknowledge(state, AcknowledgeCommand(by="x", level="billing"))


def test_escalate_moves_to_the_next_or_named_level_and_refuses_nonsense():
    state = commit(opened(), T0)
    assert tr.check_escalate(state, EscalateCommand(by="sam", reason="r")) == "engineering"
    decision = tr.escalate(state, EscalateCommand(by="sam", reason="needs a developer", to_level="management"),
                           T0 + S)
    moved = commit(decision, T0 + S)
    [entry] = moved.view.path
    assert (entry.to_level, entry.auto, entry.by) == ("management", False, "sam")
    assert moved.view.counts.manual_escalations == 1
    with pytest.raises(tr.InvalidCommand, match="already at management"):
        tr.check_escalate(moved, EscalateCommand(by="x", reason="r", to_level="management"))
    with pytest.raises(tr.InvalidCommand, match="last level"):
        tr.check_escalate(moved, EscalateCommand(by="x", reason="r"))
    with pytest.raises(tr.InvalidCommand, match="not a level"):
        tr.check_escalate(moved, EscalateCommand(by="x", reason="r", to_level="nope"))


def test_a_customer_visible_note_restarts_the_cadence_an_internal_one_does_not():
    state = commit(opened(), T0)
    internal = commit(tr.add_note(state, AddNoteCommand(author="sam", text="x"), T0 + 5 * S), T0 + 5 * S)
    assert due(internal)["cadence"] == T0 + 60 * S and internal.view.counts.notes == 1
    decision = tr.add_note(state, AddNoteCommand(author="sam", text="we found it", customer_visible=True), T0 + 5 * S)
    visible = commit(decision, T0 + 5 * S)
    assert due(visible)["cadence"] == T0 + 65 * S
    assert [n.template for n in decision.changes[0].notify] == ["customer_update"]


def test_resolve_stops_every_clock_and_plans_the_postmortem():
    state = commit(opened(), T0)
    plan = tr.postmortem_plan(state, T0 + 10 * S)
    assert plan.workflow_id == "postmortem-T-1" and plan.due == T0 + 40 * S
    decision = tr.resolve(state, ResolveCommand(by="dana", root_cause="a", mitigation="b"), T0 + 10 * S, plan)
    state = commit(decision, T0 + 10 * S)
    assert types(decision) == ["resolved", "csat_requested", "postmortem_started"]
    assert state.view.status == "resolved" and tr.upcoming(state) == []
    assert decision.changes[0].payload["resolution_seconds"] == 10.0
    for check in (tr.check_resolve, tr.check_pause, tr.check_add_note):
        with pytest.raises(tr.InvalidCommand, match="is resolved"):
            check(state, None)
    with pytest.raises(tr.InvalidCommand, match="not paused"):
        tr.check_resume(state, None)


def test_postmortem_reports_and_close():
    state = commit(opened(), T0)
    assert tr.postmortem_report(state, PostmortemReport(kind="reminder", number=1, at=T0)) is None
    plan = tr.postmortem_plan(state, T0 + S)
    state = commit(tr.resolve(state, ResolveCommand(by="d", root_cause="a", mitigation="b"), T0 + S, plan), T0 + S)
    reminder = tr.postmortem_report(state, PostmortemReport(kind="reminder", number=1, at=T0 + 11 * S))
    assert reminder is not None and types(reminder) == ["postmortem_reminder"]
    state = commit(reminder, T0 + 11 * S)
    result = PostmortemResult(completed_by="dana", completed_at=T0 + 20 * S, summary="s", root_cause="r",
                              improvements=["i"], reminders_sent=1, overdue=False)
    closed = tr.close(state, result, T0 + 20 * S)
    assert types(closed) == ["postmortem_completed", "closed"]
    assert commit(closed, T0 + 20 * S).view.status == "closed"


def test_apply_policy_rebudgets_the_running_clocks():
    state = commit(opened(), T0)
    newer = load_policy_text(policy_path("fast").read_text().replace("version: 1", "version: 2")
                             .replace("ack_within: 2s\n    contacts: [{name: Tier 2", "ack_within: 90s\n    contacts: [{name: Tier 2"))
    with pytest.raises(tr.InvalidCommand, match="only newer versions"):
        tr.check_apply_policy(state, ApplyPolicyCommand(version=1))
    decision = tr.apply_policy(state, ApplyPolicyCommand(by="ops", version=2), newer)
    state = commit(decision, T0 + S)
    assert state.view.policy.version == 2 and due(state)["ack"] == T0 + 90 * S


def test_delivery_reports_count_and_link_jira_once():
    state = commit(opened(), T0)
    decision = tr.deliveries_reported(state, sent=3, failures=[], jira_key="ESC-1")
    state = commit(decision, T0 + S)
    assert types(decision) == ["jira_linked"] and state.view.notifications_sent == 3
    again = tr.deliveries_reported(state, sent=1, failures=[{"key": "k"}], jira_key="ESC-1")
    assert types(again) == ["notification_failed"]


def test_events_are_numbered_after_the_last_one_and_key_their_notifications():
    decision = opened()
    assembled = events.assemble(decision.state, decision.changes, T0, handoff=None, impact={})
    [event] = assembled.events
    assert event.seq == 1 and event.occurred_at == T0
    assert {i.key.split(":")[1] for i in assembled.intents} == {"1"}
    assert all("handoff" not in i.context["escalation"] for i in assembled.intents)
    state = decision.state
    ack_due = T0 + 2 * S
    later = tr.deadlines(state, ack_due, tr.due_by(state, ack_due))
    assembled = events.assemble(later.state, later.changes, ack_due, handoff=None, impact={},
                                decided_at=ack_due + 40 * MS)
    assert [e.seq for e in assembled.events] == [2]
    assert assembled.events[0].payload["decided_at"] == (ack_due + 40 * MS).isoformat()
