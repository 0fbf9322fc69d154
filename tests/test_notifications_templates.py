"""Message texts: the blog's customer phrases, time zones, tolerance of missing keys."""

from __future__ import annotations

import copy
from typing import get_args

import pytest

from activities.templates import (
    MISSING,
    OPEN_IN_UI,
    format_time,
    handoff_sections,
    jira_labels,
    jira_summary,
    render,
    template_ids,
)
from schemas.notifications import Template

ESCALATION = {
    "ticket_id": "SF-1042",
    "title": "Salesforce sync failing since yesterday",
    "priority": "P1",
    "kind": "priority",
    "category": "integration",
    "status": "open",
    "level": "engineering",
    "level_name": "Engineering",
    "owner": "Dana",
    "workflow_id": "escalation-SF-1042",
    "customer": {"id": "acme", "name": "Acme Corp", "segment": "enterprise", "timezone": "Europe/Berlin"},
    "impact": {"users_affected": 250, "critical": True},
    "handoff": {
        "ticket_history": "Opened by Head of Operations",
        "error_logs": "SyncError: field Account.Region__c missing",
        "integration_id": "sf-prod-7",
        "steps_to_reproduce": "Trigger a sync",
    },
    "deadlines": {
        "ack_due": "2026-11-27T12:30:00Z",
        "resolve_due": "2026-11-27T16:00:00Z",
        "next_customer_update_due": "2026-11-27T13:00:00Z",
    },
}


def context(**extra):
    return {"escalation": copy.deepcopy(ESCALATION), **extra}


def test_every_template_id_has_a_text():
    assert set(template_ids()) == set(get_args(Template))


def test_customer_hears_the_team_and_the_next_update_in_their_time_zone():
    message = render("customer_escalated", context(next_update_by="2026-11-27T13:00:00Z"), "customer")
    assert "We've escalated this to our Engineering team." in message.text
    assert "Next update by Fri 27 Nov 2026, 14:00 CET." in message.text
    assert "Next update by Fri 27 Nov 2026, 14:00 CET." in message.html
    assert "We&#x27;ve escalated this to our Engineering team." in message.html
    # Nothing internal for the customer: no facts, no link to Temporal UI, no owner.
    assert message.facts == () and message.link is None
    assert OPEN_IN_UI not in message.text and "Dana" not in message.text


def test_team_names_are_not_doubled_and_the_target_level_wins():
    message = render(
        "customer_escalated", context(to_level_name="Platform Team", next_update_by=None), "customer"
    )
    assert "our Platform team." in message.text
    # The escalation's own deadline stands in for a missing next_update_by.
    assert "Next update by Fri 27 Nov 2026, 14:00 CET." in message.text


def test_customer_time_zone_defaults_to_utc():
    ctx = context(next_update_by="2026-11-27T13:00:00Z")
    del ctx["escalation"]["customer"]["timezone"]
    assert "Next update by Fri 27 Nov 2026, 13:00 UTC." in render("customer_update", ctx, "customer").text


def test_summer_time_and_internal_times_in_utc():
    assert format_time("2026-07-03T08:05:00+00:00", "Europe/Berlin") == "Fri 3 Jul 2026, 10:05 CEST"
    assert format_time("2026-11-27T13:00:00Z", "America/New_York") == "Fri 27 Nov 2026, 08:00 EST"
    message = render("escalation_opened", context(), "owner", workflow_url="https://ui/x")
    assert "Acknowledge by Fri 27 Nov 2026, 12:30 UTC." in message.text
    assert ("Deadline", "Acknowledge by Fri 27 Nov 2026, 12:30 UTC") in message.facts


def test_customer_update_prefers_the_visible_note():
    message = render(
        "customer_update",
        context(text="Our engineering team is investigating the issue.", n=2,
                next_update_by="2026-11-27T15:00:00Z"),
        "customer",
    )
    assert message.blocks == (
        "Our engineering team is investigating the issue.",
        "Next update by Fri 27 Nov 2026, 16:00 CET.",
    )


def test_resolution_lists_root_cause_mitigation_and_preventive_actions():
    message = render(
        "customer_resolved",
        context(resolution={
            "root_cause": "A Salesforce API schema change broke the sync",
            "mitigation": "Hotfix deployed",
            "preventive_actions": ["Monitor for schema changes", "Alert on sync lag"],
        }),
        "customer",
    )
    assert "Root cause: A Salesforce API schema change broke the sync" in message.text
    assert "What we did: Hotfix deployed" in message.text
    assert "- Monitor for schema changes\n- Alert on sync lag" in message.text
    assert "<li>Alert on sync lag</li>" in message.html


def test_csat_request_with_and_without_a_link():
    with_link = render("csat_request", context(csat_window="7d", csat_url="https://x.test/r/1"), "customer")
    assert "Rate us: https://x.test/r/1" in with_link.text
    assert "for 7 days after the resolution" in with_link.text
    assert '<a href="https://x.test/r/1">Rate us</a>' in with_link.html
    without = render("csat_request", context(csat_window="1d", csat_url=None), "customer")
    assert "reply to this message with a number from 1 to 5" in without.text
    assert "for 1 day after" in without.text


@pytest.mark.parametrize("template", sorted(get_args(Template)))
def test_every_template_renders_with_only_the_escalation(template):
    """Missing optional keys render as a dash instead of failing the delivery."""
    audience = "customer" if template.startswith("customer_") or template == "csat_request" else "owner"
    message = render(template, {"escalation": {}}, audience)
    assert message.subject and message.text and message.html.startswith("<!DOCTYPE html>")
    assert "None" not in message.text and "{" not in message.text


def test_missing_escalation_is_a_bug():
    with pytest.raises(ValueError, match="no 'escalation'"):
        render("escalated", {"reason": "x"}, "owner")
    with pytest.raises(ValueError, match="unknown notification template"):
        render("nope", context(), "owner")


def test_html_escapes_values():
    ctx = context()
    ctx["escalation"]["title"] = "<script>alert(1)</script> & co"
    message = render("sla_breached", ctx, "breach", workflow_url="https://ui/x?a=1&b=2")
    assert "<script>" not in message.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in message.html
    assert 'href="https://ui/x?a=1&amp;b=2"' in message.html


def test_escalated_names_levels_reason_and_actor():
    message = render(
        "escalated",
        context(from_level="tier2", to_level="engineering", to_level_name="Engineering",
                by="ack timeout", reason="not acknowledged within 30m"),
        "owner",
    )
    assert message.subject == "[P1] Escalated to Engineering: Salesforce sync failing since yesterday (SF-1042)"
    assert message.blocks[0] == (
        "SF-1042 for Acme Corp was escalated from tier2 to Engineering by ack timeout."
    )
    assert message.blocks[1] == "Reason: not acknowledged within 30m"


def test_jira_texts_carry_the_handoff():
    ctx = context()
    assert jira_summary(ctx) == "[P1] Salesforce sync failing since yesterday"
    assert jira_labels(ctx) == ["P1", "escalation"]
    sections = {s.title: s for s in handoff_sections(ctx)}
    assert list(sections) == [
        "Customer", "Impact", "Ticket history", "Error logs", "Integration ID", "Steps to reproduce"
    ]
    assert sections["Customer"].text == "Acme Corp (acme, enterprise)"
    assert sections["Impact"].text == "250 users affected, critical"
    assert sections["Error logs"].code and sections["Error logs"].text.startswith("SyncError")
    ctx["escalation"]["handoff"] = {"ticket_history": None}
    assert {s.title: s.text for s in handoff_sections(ctx)}["Ticket history"] == MISSING
