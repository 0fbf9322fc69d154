"""Policy loading: every bad key is named; `policy check` prints the chain or exits 1."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from escalations.policies import packaged_policy
from schemas.policy import PolicyError, load_policy_file, load_policy_text, parse_policy
from starter import app


def base() -> dict[str, Any]:
    return yaml.safe_load(packaged_policy("default").read_text())


def problems_of(document: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as error:
        parse_policy(document, "test.yaml")
    return error.value.problems


def test_packaged_policies_load():
    default = load_policy_file(packaged_policy("default"))
    assert default.level_ids == ["tier1", "tier2", "engineering", "management"]
    assert default.priorities["P1"].resolve_within == timedelta(hours=4)
    assert default.priorities["P1"].customer_update_every == timedelta(hours=2)
    demo = load_policy_file(packaged_policy("demo"))
    assert all(level.ack_within < timedelta(minutes=1) for level in demo.levels)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("4h", timedelta(hours=4)),
     ("2d", timedelta(days=2)), ("PT4H", timedelta(hours=4)), ("P1DT2H", timedelta(days=1, hours=2))],
)
def test_duration_forms(value, expected):
    document = base()
    document["levels"][0]["ack_within"] = value
    assert parse_policy(document).levels[0].ack_within == expected


def mutate(path: str, value: Any) -> dict[str, Any]:
    document = base()
    target = document
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is KeyError:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("levels.0.ackwithin", "15m", "levels[0].ackwithin: unknown key"),
        ("levels.0.ack_within", "15 minutes", "levels[0].ack_within: invalid duration '15 minutes'"),
        ("levels.0.ack_within", "0s", "levels[0].ack_within: duration must be positive"),
        ("priorities.P4", KeyError, "P4 missing"),
        ("priorities.P1.entry_level", "tier9", "priorities.P1.entry_level: unknown level 'tier9'"),
        ("priorities.P1.at_risk_at", 1.5, "priorities.P1.at_risk_at: at_risk_at must be between 0 and 1"),
        ("priorities.P3.calendar", "business-us", "priorities.P3.calendar: unknown calendar 'business-us'"),
        ("calendars.business-eu.timezone", "Mars/Olympus", "calendars.business-eu.timezone: unknown time zone"),
        ("calendars.business-eu.hours", "17:00-09:00", "calendars.business-eu.hours: hours '17:00-09:00' must open"),
        ("calendars.business-eu.holidays", ["2026-13-40"], "calendars.business-eu.holidays[0]"),
        ("calendars.business-eu.weekdays", ["mon", "funday"], "calendars.business-eu.weekdays[1]"),
        ("routes.billing", "accounts", "routes.billing: unknown level or department 'accounts'"),
        ("departments.billing.escalates_to", "legal", None),  # legal → management: fine
        ("criteria.rules.0.when.users_affected_more", 3, "criteria.rules[0].when.users_affected_more: unknown key"),
        ("criteria.rules.0.open_as.kind", "sideways", "criteria.rules[0].open_as.kind"),
        ("criteria.sweep_every", "often", "criteria.sweep_every: invalid duration"),
        ("postmortem_due", "soon", "postmortem_due: invalid duration"),
    ],
)
def test_bad_keys_are_named(path, value, expected):
    document = mutate(path, value)
    if expected is None:
        parse_policy(document)
        return
    problems = problems_of(document)
    assert any(expected in problem for problem in problems), problems


def test_routing_problems_are_named():
    document = base()
    document["departments"]["billing"]["escalates_to"] = "legal"
    document["departments"]["legal"]["escalates_to"] = "billing"
    assert any("departments.billing.escalates_to: cycle billing -> legal -> billing" in p
               for p in problems_of(document))

    document = base()
    document["levels"][1]["contacts"][0]["backup"] = "Nobody"
    assert any("levels[1]" in p and "backup 'Nobody'" in p for p in problems_of(document))

    document = base()
    document["levels"][1]["oncall"] = {"people": [], "every": "7d", "starts": "2026-11-02T09:00:00+01:00"}
    assert any("levels[1].oncall.people" in p for p in problems_of(document))

    document = base()
    document["levels"][1]["oncall"] = {"people": ["Tier 2 on-call"], "every": "-1d",
                                       "starts": "2026-11-02T09:00:00+01:00"}
    assert any("levels[1].oncall.every" in p for p in problems_of(document))

    document = base()
    document["levels"][1]["hold_until_available"] = True
    document["levels"][1]["availability"] = "business-eu"
    assert any("levels[1].hold_until_available" in p and "24x7" in p for p in problems_of(document))


def test_invalid_yaml_is_reported():
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy_text("levels: [", "broken.yaml")


def test_policy_check_prints_chain_and_targets():
    result = CliRunner().invoke(app, ["policy", "check", str(packaged_policy("default")),
                                      "--at", "2026-11-27T10:00:00+00:00"], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    for text in ("tier1", "Tier 2 Support", "engineering", "management", "resolve within", "4h",
                 "business-eu", "Routing", "billing", "Who would be paged"):
        assert text in result.output


def test_policy_check_exits_1_naming_the_key(tmp_path):
    document = base()
    document["priorities"]["P1"]["at_risk_at"] = 2
    document["levels"][0]["colour"] = "red"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 1
    assert "priorities.P1.at_risk_at" in result.output and "levels[0].colour: unknown key" in result.output
