"""Pure rule matching (workflows/criteria.py) and the policy's ``criteria:`` block."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from schemas.policy import PolicyError, Rule, load_policy_text
from schemas.ticket import TicketFacts, slugify
from tests.helpers.policies import policy_path
from workflows.criteria import first_match, sla_remaining

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
FAST = policy_path("fast").read_text(encoding="utf-8")

CRITERIA = """
criteria:
  sweep_every: 1s
  rules:
    - name: many-users
      when: {users_affected_at_least: 10}
      open_as: {kind: priority, priority: P1}
    - name: sla-risk
      when: {sla_remaining_below: 0.25}
      open_as: {kind: hierarchical, priority: P2}
    - name: stuck
      when: {interactions_at_least: 5, open_longer_than: 24h}
      open_as: {kind: functional, priority: P2}
    - name: vip
      when: {segment: [Enterprise, strategic], priority_at_most: P2}
      open_as: {kind: hierarchical, priority: P1}
"""


def rules(extra: str = CRITERIA) -> list[Rule]:
    policy = load_policy_text(FAST + extra, "test")
    assert policy.criteria is not None
    return policy.criteria.rules


def ticket(**fields) -> TicketFacts:
    base = {"id": "T-1", "status": "open", "opened_at": NOW - timedelta(hours=2),
            "updated_at": NOW - timedelta(hours=1)}
    return TicketFacts.model_validate({**base, **fields})


def test_each_rule_fires_with_its_detail():
    chain = rules()
    hit = first_match(chain, ticket(users_affected=40), NOW)
    assert hit is not None and hit.rule.name == "many-users"
    assert hit.detail == "many-users: users_affected=40 ≥ 10"
    assert hit.rule.open_as.kind == "priority" and hit.rule.open_as.priority == "P1"

    # 22h window, 2h left: 0.09 < 0.25
    due = ticket(opened_at=NOW - timedelta(hours=20), resolution_due=NOW + timedelta(hours=2))
    hit = first_match(chain, due, NOW)
    assert hit is not None and hit.detail == "sla-risk: sla_remaining=0.09 < 0.25"

    stuck = ticket(interactions=6, opened_at=NOW - timedelta(days=1, hours=2))
    hit = first_match(chain, stuck, NOW)
    assert hit is not None and hit.detail == "stuck: interactions=6 ≥ 5, open for 1d 2h > 1d"

    vip = ticket(segment="enterprise", priority="P1")
    hit = first_match(chain, vip, NOW)
    assert hit is not None
    assert hit.detail == ("vip: segment=enterprise in [Enterprise, strategic], "
                          "priority=P1 at least as urgent as P2")


def test_first_matching_rule_wins():
    both = ticket(users_affected=40, opened_at=NOW - timedelta(hours=20),
                  resolution_due=NOW + timedelta(hours=1))
    hit = first_match(rules(), both, NOW)
    assert hit is not None and hit.rule.name == "many-users"


def test_all_conditions_of_a_rule_must_hold():
    chain = rules()
    assert first_match(chain, ticket(interactions=9, opened_at=NOW - timedelta(hours=23)), NOW) is None
    assert first_match(chain, ticket(interactions=4, opened_at=NOW - timedelta(days=3)), NOW) is None
    assert first_match(chain, ticket(segment="enterprise", priority="P3"), NOW) is None
    assert first_match(chain, ticket(segment="smb", priority="P1"), NOW) is None


def test_missing_fields_never_match_and_boundaries():
    chain = rules()
    assert first_match(chain, ticket(), NOW) is None
    assert first_match(chain, ticket(users_affected=9), NOW) is None
    assert first_match(chain, ticket(users_affected=10), NOW) is not None  # at least: inclusive
    assert first_match(chain, ticket(segment="enterprise"), NOW) is None  # no priority
    assert first_match(chain, ticket(priority="P1"), NOW) is None  # no segment
    # exactly 24h open is not "longer than" 24h
    assert first_match(chain, ticket(interactions=5, opened_at=NOW - timedelta(hours=24)), NOW) is None


def test_priority_at_most_means_at_least_as_urgent():
    only = rules("""
criteria:
  rules:
    - name: urgent
      when: {priority_at_most: P2}
      open_as: {kind: priority, priority: P1}
""")
    assert [p for p in ("P1", "P2", "P3", "P4") if first_match(only, ticket(priority=p), NOW)] == ["P1", "P2"]


def test_single_segment_ignores_case():
    only = rules("""
criteria:
  rules:
    - name: enterprise
      when: {segment: enterprise}
      open_as: {kind: hierarchical, priority: P2}
""")
    hit = first_match(only, ticket(segment="Enterprise"), NOW)
    assert hit is not None and hit.detail == "enterprise: segment=Enterprise"


def test_sla_remaining_fraction():
    assert sla_remaining(ticket(), NOW) is None  # no resolution_due: never matches sla rules
    window = ticket(opened_at=NOW - timedelta(hours=3), resolution_due=NOW + timedelta(hours=1))
    assert sla_remaining(window, NOW) == pytest.approx(0.25)
    assert first_match(rules(), window, NOW) is None  # 0.25 is not below 0.25
    overdue = ticket(opened_at=NOW - timedelta(hours=5), resolution_due=NOW - timedelta(hours=1))
    assert sla_remaining(overdue, NOW) == pytest.approx(-0.25)
    hit = first_match(rules(), overdue, NOW)
    assert hit is not None and hit.detail == "sla-risk: sla_remaining=-0.25 < 0.25"


def test_default_sweep_interval_is_five_minutes():
    policy = load_policy_text(FAST + """
criteria:
  rules:
    - {name: many-users, when: {users_affected_at_least: 10}, open_as: {kind: priority, priority: P1}}
""")
    assert policy.criteria is not None and policy.criteria.sweep_every == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("block", "named"),
    [
        ("    - {name: r, when: {users_affected_more_than: 10}, open_as: {kind: priority, priority: P1}}",
         "criteria.rules[0].when.users_affected_more_than: unknown key"),
        ("    - {name: r, when: {users_affected_at_least: 10}, open_as: {kind: priority, priority: P1}, "
         "unless: {segment: smb}}",
         "criteria.rules[0].unless: unknown key"),
        ("    - {name: r, when: {}, open_as: {kind: priority, priority: P1}}",
         "criteria.rules[0].when: a rule needs at least one condition"),
        ("    - {name: r, when: {sla_remaining_below: 1.5}, open_as: {kind: priority, priority: P1}}",
         "criteria.rules[0].when.sla_remaining_below"),
        ("    - {name: r, when: {users_affected_at_least: 1}, open_as: {kind: urgent, priority: P1}}",
         "criteria.rules[0].open_as.kind"),
    ],
)
def test_unknown_or_invalid_criteria_reject_the_policy(block: str, named: str):
    with pytest.raises(PolicyError) as rejected:
        load_policy_text(FAST + "criteria:\n  rules:\n" + block + "\n", "bad.yaml")
    assert any(problem.startswith(named) for problem in rejected.value.problems), rejected.value.problems


def test_unknown_criteria_key_is_rejected():
    with pytest.raises(PolicyError) as rejected:
        load_policy_text(FAST + "criteria:\n  sweep_evry: 1m\n  rules: []\n", "bad.yaml")
    assert "criteria.sweep_evry: unknown key" in rejected.value.problems


def test_slugify_categories():
    assert slugify("Billing & Invoices") == "billing-invoices"
    assert slugify("  ") == "general"
    assert slugify(None) == "general"
    assert slugify("technical") == "technical"
