"""The escalation policy: chain of levels, departments, SLA targets, calendars, criteria.

A policy is loaded from YAML by an activity and pinned in the workflow for the life
of the run, so every field here must survive a JSON round trip through the
pydantic data converter.
"""

from __future__ import annotations

import hashlib
import json
import re
import zoneinfo
from datetime import date, time, timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.durations import Duration, format_duration

PRIORITIES = ("P1", "P2", "P3", "P4")
KINDS = ("functional", "hierarchical", "priority")
CHANNELS = ("log", "webhook", "slack", "teams", "email", "jira")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_OPEN = "24x7"

Priority = Literal["P1", "P2", "P3", "P4"]
Kind = Literal["functional", "hierarchical", "priority"]
Channel = Literal["log", "webhook", "slack", "teams", "email", "jira"]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]


class Strict(BaseModel):
    """Unknown keys are an error, so a typo in a policy never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactPoint(Strict):
    """Who, on which channel, at which address: what a page is sent to."""

    name: str = Field(min_length=1)
    channel: Channel
    target: str = Field(min_length=1)


# Slack member ids: U… (a workspace member) or W… (an Enterprise Grid member).
SLACK_USER_ID_PATTERN = r"^[UW][A-Z0-9]{2,31}$"


class Contact(ContactPoint):
    """A policy's contact: a contact point, when it is available, and who stands in.

    ``slack_user_id`` is the person's Slack member id: a Slack button pressed by that member
    acts as this contact (``POST /integrations/slack/interactions``); nobody else's press does.
    """

    availability: str = ALWAYS_OPEN
    backup: str | None = None
    slack_user_id: str | None = Field(default=None, pattern=SLACK_USER_ID_PATTERN)

    def point(self) -> ContactPoint:
        return ContactPoint(name=self.name, channel=self.channel, target=self.target)


class Rotation(Strict):
    """An on-call rotation: ``people`` take turns every ``every`` from ``starts``."""

    people: list[str] = Field(min_length=1)
    every: Duration
    starts: AwareDatetime
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            _check_zone(value)
        return value


class Responder(Strict):
    """What levels and departments share: who to page and how fast they must answer."""

    name: str | None = None
    ack_within: Duration
    contacts: list[Contact] = Field(default_factory=list)
    oncall: Rotation | None = None
    hold_until_available: bool = False
    availability: str = ALWAYS_OPEN

    @model_validator(mode="after")
    def _contacts_and_backups(self) -> "Responder":
        names = [c.name for c in self.contacts]
        if not self.contacts and self.oncall is None:
            raise ValueError("needs at least one contact or an oncall rotation")
        if len(set(names)) != len(names):
            raise ValueError("contact names must be unique within a level")
        for contact in self.contacts:
            if contact.backup is not None and contact.backup not in names:
                raise ValueError(
                    f"contact {contact.name!r} has backup {contact.backup!r}, which is not a "
                    f"contact of this level (contacts: {', '.join(names)})"
                )
        if self.oncall is not None:
            missing = [p for p in self.oncall.people if p not in names]
            if missing:
                raise ValueError(
                    f"oncall people {missing} are not contacts of this level "
                    f"(contacts: {', '.join(names)})"
                )
        return self


class Level(Responder):
    id: Slug
    manager: str | None = None


class Department(Responder):
    escalates_to: str


class Calendar(Strict):
    timezone: str
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        min_length=1
    )
    hours: str
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        _check_zone(value)
        return value

    @field_validator("weekdays")
    @classmethod
    def _unique_days(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("weekdays must not repeat")
        return value

    @field_validator("hours")
    @classmethod
    def _opening_hours(cls, value: str) -> str:
        opens, closes = parse_hours(value)
        if not opens < closes:
            raise ValueError(
                f"hours {value!r} must open before they close on the same day (e.g. 09:00-17:00)"
            )
        return value

    @property
    def opening(self) -> tuple[time, time]:
        return parse_hours(self.hours)


class PriorityTargets(Strict):
    entry_level: str
    resolve_within: Duration
    customer_update_every: Duration
    at_risk_at: float = 0.75
    calendar: str = ALWAYS_OPEN
    breach_notifies: str
    pause_stops_ack: bool = False
    max_pause: Duration | None = None

    @field_validator("at_risk_at")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError(f"at_risk_at must be between 0 and 1 (exclusive), got {value}")
        return value


class CustomerChannel(Strict):
    channel: Channel = "log"
    target: str | None = None


class RuleConditions(Strict):
    users_affected_at_least: int | None = Field(default=None, ge=1)
    sla_remaining_below: float | None = Field(default=None, gt=0, lt=1)
    interactions_at_least: int | None = Field(default=None, ge=1)
    open_longer_than: Duration | None = None
    segment: str | list[str] | None = None
    priority_at_most: Priority | None = None

    @model_validator(mode="after")
    def _something_to_check(self) -> "RuleConditions":
        if all(v is None for v in self.model_dump().values()):
            raise ValueError("a rule needs at least one condition")
        return self


class OpenAs(Strict):
    kind: Kind
    priority: Priority


class Rule(Strict):
    name: Slug
    when: RuleConditions
    open_as: OpenAs


class Criteria(Strict):
    sweep_every: Duration = timedelta(minutes=5)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Rule]) -> list[Rule]:
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        return rules


# -- customer contracts ----------------------------------------------------------
# Reserved for "under no contract" where contracts are named (the KPIs' ``contract=none``).
NO_CONTRACT = "none"
MatchValue = Annotated[str, Field(min_length=1, max_length=200)]


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


class ContractMatch(Strict):
    """Which customers a contract covers: every field given must match; within a list, any value.

    ``segment`` and ``plan`` compare ignoring case (as the sweep's ``segment`` does);
    ``customer_ids`` exactly. ``any_customer: true`` is the catch-all.
    """

    segment: list[MatchValue] | None = None
    plan: list[MatchValue] | None = None
    customer_ids: list[MatchValue] | None = None
    any_customer: bool | None = None

    @field_validator("segment", "plan", "customer_ids", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return _as_list(value)

    @field_validator("segment", "plan", "customer_ids")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty list matches no customer")
        return value

    @field_validator("any_customer")
    @classmethod
    def _only_true(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError("any_customer: false matches no customer; leave it out")
        return value

    @model_validator(mode="after")
    def _something_to_match(self) -> "ContractMatch":
        given = [name for name in ("segment", "plan", "customer_ids") if getattr(self, name) is not None]
        if self.any_customer and given:
            raise ValueError(f"any_customer: true matches everyone; drop {', '.join(given)} or any_customer")
        if not self.any_customer and not given:
            raise ValueError("an empty match applies to no customer: give segment, plan, customer_ids "
                             "or any_customer: true")
        return self

    def conditions(self) -> dict[str, frozenset[str]]:
        """Field -> accepted values (segment and plan case-folded); empty for the catch-all."""
        found: dict[str, frozenset[str]] = {}
        for name in ("segment", "plan"):
            values = getattr(self, name)
            if values is not None:
                found[name] = frozenset(v.casefold() for v in values)
        if self.customer_ids is not None:
            found["customer_ids"] = frozenset(self.customer_ids)
        return found

    def matches(self, *, customer_id: str, segment: str | None, plan: str | None) -> bool:
        seen = {"customer_ids": customer_id, "segment": segment.casefold() if segment else None,
                "plan": plan.casefold() if plan else None}
        return all(seen[name] in values for name, values in self.conditions().items())

    def covers(self, other: "ContractMatch") -> bool:
        """Every customer ``other`` matches, this matches too (so ``other`` after it never applies)."""
        mine, theirs = self.conditions(), other.conditions()
        return all(name in theirs and theirs[name] <= values for name, values in mine.items())

    def describe(self) -> str:
        if self.any_customer:
            return "any customer"
        parts = [f"{name} {' | '.join(values)}" for name in ("segment", "plan", "customer_ids")
                 if (values := getattr(self, name)) is not None]
        return " and ".join(parts)


class ContractTargets(Strict):
    """A contract's overrides for one priority; what it leaves out comes from ``priorities``."""

    resolve_within: Duration | None = None
    customer_update_every: Duration | None = None
    at_risk_at: float | None = None
    calendar: str | None = None
    ack_within: dict[str, Duration] = Field(default_factory=dict)

    @field_validator("at_risk_at")
    @classmethod
    def _fraction(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value < 1:
            raise ValueError(f"at_risk_at must be between 0 and 1 (exclusive), got {value}")
        return value


class Contract(Strict):
    """SLA targets sold to some customers: matched on the customer, overriding per priority."""

    key: Slug
    name: str | None = None
    match: ContractMatch
    priorities: dict[str, ContractTargets] = Field(default_factory=dict)


class ActionLinks(Strict):
    """The signed action links in pages (acknowledge, escalate, add a note)."""

    expire_after: Duration = timedelta(hours=24)


DEFAULT_ACTION_LINKS = ActionLinks()


# -- the Jira integration -----------------------------------------------------------
JiraStatusAction = Literal["note", "resolve"]
JIRA_ROOT_CAUSE = "Found and fixed by engineering; the postmortem records the details."
JIRA_MITIGATION = "Fixed by engineering."


class JiraSync(Strict):
    """The linked Jira issue: its priority field, and what its comments and transitions do.

    ``priorities`` maps P1–P4 to the names of Jira priorities (sent as ``fields.priority.name``
    when the issue is created); ``statuses`` maps a Jira status (compared ignoring case) to
    what moving the issue into it does to the escalation: ``note`` records a note announcing
    it, ``resolve`` resolves the escalation with ``resolve_root_cause`` and
    ``resolve_mitigation`` (Jira has no such fields; the issue's resolution is added to the
    mitigation). Comments become notes, visible to the customer only with
    ``comments_customer_visible: true``. See docs/notifications.md#jira-back-sync.
    """

    priorities: dict[Priority, Annotated[str, Field(min_length=1, max_length=255)]] = Field(default_factory=dict)
    statuses: dict[Annotated[str, Field(min_length=1, max_length=255)], JiraStatusAction] = Field(
        default_factory=dict)
    comments_customer_visible: bool = False
    resolve_root_cause: Annotated[str, Field(min_length=1, max_length=2000)] = JIRA_ROOT_CAUSE
    resolve_mitigation: Annotated[str, Field(min_length=1, max_length=2000)] = JIRA_MITIGATION

    @field_validator("statuses")
    @classmethod
    def _distinct_statuses(cls, value: dict[str, str]) -> dict[str, str]:
        folded: dict[str, str] = {}
        for name in value:
            key = name.strip().casefold()
            if not key:
                raise ValueError("a status name must not be blank")
            if key in folded:
                raise ValueError(f"{name!r} and {folded[key]!r} name the same Jira status (compared ignoring case)")
            folded[key] = name
        return value

    def status_action(self, status: str | None) -> JiraStatusAction | None:
        """What moving the issue into ``status`` does (None: nothing)."""
        if not status:
            return None
        wanted = status.strip().casefold()
        return next((action for name, action in self.statuses.items() if name.strip().casefold() == wanted), None)


class Policy(Strict):
    name: Slug
    version: int = Field(ge=1)
    description: str | None = None
    levels: list[Level] = Field(min_length=1)
    departments: dict[Slug, Department] = Field(default_factory=dict)
    routes: dict[Slug, str] = Field(default_factory=dict)
    calendars: dict[str, Calendar] = Field(default_factory=dict)
    priorities: dict[Priority, PriorityTargets]
    customer: CustomerChannel = CustomerChannel()
    postmortem_due: Duration = timedelta(days=5)
    postmortem_remind_every: Duration = timedelta(days=1)
    csat_window: Duration = timedelta(days=7)
    repeat_window: Duration = timedelta(days=30)
    max_pause: Duration = timedelta(days=14)
    continue_as_new_after_events: int = Field(default=5000, ge=50)
    criteria: Criteria | None = None
    contracts: list[Contract] = Field(default_factory=list)
    action_links: ActionLinks | None = None
    jira: JiraSync | None = None

    @model_validator(mode="after")
    def _references(self) -> "Policy":
        level_ids = [lvl.id for lvl in self.levels]
        if len(set(level_ids)) != len(level_ids):
            raise ValueError(f"level ids must be unique, got {level_ids}")
        clash = set(level_ids) & set(self.departments)
        if clash:
            raise ValueError(f"departments {sorted(clash)} reuse level ids")
        missing = [p for p in PRIORITIES if p not in self.priorities]
        if missing:
            raise ValueError(f"priorities: {', '.join(missing)} missing (P1-P4 are all required)")
        if ALWAYS_OPEN in self.calendars:
            raise ValueError(f"calendars: {ALWAYS_OPEN!r} is built in and cannot be redefined")
        responders = set(level_ids) | set(self.departments)
        problems: list[str] = []

        def known_calendar(where: str, name: str) -> None:
            if name != ALWAYS_OPEN and name not in self.calendars:
                problems.append(
                    f"{where}: unknown calendar {name!r} (known: {', '.join(self.calendar_names)})"
                )

        for pname, targets in self.priorities.items():
            if targets.entry_level not in level_ids:
                problems.append(
                    f"priorities.{pname}.entry_level: unknown level {targets.entry_level!r} "
                    f"(levels: {', '.join(level_ids)})"
                )
            if targets.breach_notifies not in responders:
                problems.append(
                    f"priorities.{pname}.breach_notifies: unknown level {targets.breach_notifies!r}"
                )
            known_calendar(f"priorities.{pname}.calendar", targets.calendar)
        slack_owners: dict[str, str] = {}
        for where, responder in self._responders_with_paths():
            known_calendar(f"{where}.availability", responder.availability)
            for i, contact in enumerate(responder.contacts):
                known_calendar(f"{where}.contacts[{i}].availability", contact.availability)
                if contact.slack_user_id is not None:
                    # A Slack press acts as one person: one member id, one contact name.
                    owner = slack_owners.setdefault(contact.slack_user_id, contact.name)
                    if owner != contact.name:
                        problems.append(f"{where}.contacts[{i}].slack_user_id: {contact.slack_user_id} is "
                                        f"already the Slack id of contact {owner!r}")
        for index, level in enumerate(self.levels):
            if level.manager is not None and level.manager not in responders:
                problems.append(f"levels[{index}].manager: unknown level {level.manager!r}")
        for dep_id, dep in self.departments.items():
            if dep.escalates_to not in responders:
                problems.append(
                    f"departments.{dep_id}.escalates_to: unknown level or department "
                    f"{dep.escalates_to!r}"
                )
        for category, target in self.routes.items():
            if target not in responders:
                problems.append(
                    f"routes.{category}: unknown level or department {target!r} "
                    f"(known: {', '.join(sorted(responders))})"
                )
        problems.extend(self._contract_problems(responders))
        if not problems:
            problems.extend(self._escalation_cycles())
            problems.extend(self._holds_on_always_open())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _responders_with_paths(self) -> list[tuple[str, Responder]]:
        found: list[tuple[str, Responder]] = [
            (f"levels[{i}]", lvl) for i, lvl in enumerate(self.levels)
        ]
        found.extend((f"departments.{key}", dep) for key, dep in self.departments.items())
        return found

    def _escalation_cycles(self) -> list[str]:
        problems = []
        for start in self.departments:
            seen = [start]
            current = self.departments[start].escalates_to
            while current in self.departments:
                if current in seen:
                    chain = " -> ".join([*seen, current])
                    problems.append(f"departments.{start}.escalates_to: cycle {chain}")
                    break
                seen.append(current)
                current = self.departments[current].escalates_to
        return problems

    def _contract_problems(self, responders: set[str]) -> list[str]:
        problems: list[str] = []
        first_with_key: dict[str, int] = {}
        for index, contract in enumerate(self.contracts):
            where = f"contracts[{index}]"
            if contract.key == NO_CONTRACT:
                problems.append(f"{where}.key: {NO_CONTRACT!r} is reserved for escalations under no contract")
            elif contract.key in first_with_key:
                problems.append(f"{where}.key: {contract.key!r} is already the key of "
                                f"contracts[{first_with_key[contract.key]}]")
            else:
                first_with_key[contract.key] = index
            for earlier_index, earlier in enumerate(self.contracts[:index]):
                if earlier.match.covers(contract.match):
                    problems.append(
                        f"{where}.match: never applies: every customer it matches ({contract.match.describe()}) "
                        f"is matched first by contracts[{earlier_index}] ({earlier.key}: {earlier.match.describe()})"
                    )
                    break
            for pname, override in contract.priorities.items():
                at = f"{where}.priorities.{pname}"
                if pname not in PRIORITIES:
                    problems.append(f"{at}: unknown priority {pname!r} (priorities: {', '.join(PRIORITIES)})")
                    continue
                if override.calendar is not None and override.calendar not in self.calendar_names:
                    problems.append(f"{at}.calendar: unknown calendar {override.calendar!r} "
                                    f"(known: {', '.join(self.calendar_names)})")
                for responder_id in override.ack_within:
                    if responder_id not in responders:
                        problems.append(
                            f"{at}.ack_within.{responder_id}: unknown level {responder_id!r} "
                            f"(levels and departments: {', '.join([*self.level_ids, *self.departments])})"
                        )
        return problems

    def _holds_on_always_open(self) -> list[str]:
        problems = []
        level_ids = [lvl.id for lvl in self.levels]
        for pname, contract_key, targets in self._every_target():
            if targets.calendar != ALWAYS_OPEN:
                continue
            under = f" under contract {contract_key!r}" if contract_key is not None else ""
            for lvl in self.levels[level_ids.index(targets.entry_level) :]:
                if lvl.hold_until_available:
                    problems.append(
                        f"levels[{level_ids.index(lvl.id)}].hold_until_available: level "
                        f"{lvl.id!r} is reachable by {pname}{under}, a {ALWAYS_OPEN} priority"
                    )
            for dep_id, dep in self.departments.items():
                if dep.hold_until_available and dep_id in self.routes.values():
                    problems.append(
                        f"departments.{dep_id}.hold_until_available: reachable by functional "
                        f"{pname} escalations{under}, a {ALWAYS_OPEN} priority"
                    )
        return sorted(set(problems))

    def _every_target(self) -> list[tuple[str, str | None, PriorityTargets]]:
        """(priority, contract key or None, effective targets) for every combination in use."""
        found = [(pname, None, targets) for pname, targets in self.priorities.items()]
        for contract in self.contracts:
            found.extend((pname, contract.key, self.targets(pname, contract.key))
                         for pname in self.priorities if pname in contract.priorities)
        return found

    # -- contracts: which one a customer has, and what it changes ----------------

    def contract(self, key: str) -> Contract:
        for contract in self.contracts:
            if contract.key == key:
                return contract
        raise KeyError(f"policy {self.name} v{self.version} has no contract {key!r}")

    def choose_contract(self, *, customer_id: str, segment: str | None, plan: str | None) -> str | None:
        """The key of the first contract matching the customer; None: the policy's own targets."""
        for contract in self.contracts:
            if contract.match.matches(customer_id=customer_id, segment=segment, plan=plan):
                return contract.key
        return None

    def targets(self, priority: str, contract: str | None = None) -> PriorityTargets:
        """A priority's targets under ``contract`` (None: the policy's ``priorities``)."""
        base = self.priorities[priority]  # type: ignore[index]
        override = self.contract(contract).priorities.get(priority) if contract is not None else None
        if override is None:
            return base
        changes = override.model_dump(exclude_none=True, exclude={"ack_within"})
        return base.model_copy(update=changes) if changes else base

    def ack_within(self, responder_id: str, priority: str, contract: str | None = None) -> timedelta:
        """How long ``responder_id`` has to acknowledge an escalation of ``priority`` under ``contract``."""
        if contract is not None:
            override = self.contract(contract).priorities.get(priority)
            if override is not None and responder_id in override.ack_within:
                return override.ack_within[responder_id]
        return self.responder(responder_id).ack_within

    @property
    def links(self) -> ActionLinks:
        """The action links' settings (the defaults when the policy says nothing)."""
        return self.action_links or DEFAULT_ACTION_LINKS

    @property
    def calendar_names(self) -> list[str]:
        return [ALWAYS_OPEN, *self.calendars]

    @property
    def level_ids(self) -> list[str]:
        return [lvl.id for lvl in self.levels]

    def responder(self, responder_id: str) -> Level | Department:
        for lvl in self.levels:
            if lvl.id == responder_id:
                return lvl
        if responder_id in self.departments:
            return self.departments[responder_id]
        raise KeyError(f"policy {self.name} v{self.version} has no level {responder_id!r}")

    def responder_name(self, responder_id: str) -> str:
        responder = self.responder(responder_id)
        return responder.name or responder_id

    def next_responder(self, responder_id: str) -> str | None:
        """Where an unanswered escalation goes next: up the chain, or a department's target."""
        if responder_id in self.departments:
            return self.departments[responder_id].escalates_to
        ids = self.level_ids
        position = ids.index(responder_id)
        return ids[position + 1] if position + 1 < len(ids) else None

    def rank(self, responder_id: str) -> int:
        """Position in the chain; departments rank just below the level they escalate to."""
        seen: set[str] = set()
        while responder_id in self.departments and responder_id not in seen:
            seen.add(responder_id)
            responder_id = self.departments[responder_id].escalates_to
        return self.level_ids.index(responder_id) - (1 if seen else 0)


def policy_digest(policy: Policy) -> str:
    """SHA-256 of the policy's canonical JSON: what pins a version, and what identifies its content."""
    document = policy.model_dump(mode="json")
    # A policy without contracts keeps the digest its version was pinned with before the
    # key existed; otherwise every version already in PostgreSQL would read as changed.
    # The same for keys added later that it leaves unset: jira, action_links, slack_user_id.
    if not document.get("contracts"):
        document.pop("contracts", None)
    for key in ("jira", "action_links"):
        if document.get(key) is None:
            document.pop(key, None)
    for responder in [*document.get("levels", []), *document.get("departments", {}).values()]:
        for contact in responder.get("contacts", []):
            if contact.get("slack_user_id") is None:
                contact.pop("slack_user_id", None)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_hours(value: str) -> tuple[time, time]:
    match = HOURS.match(value)
    if not match:
        raise ValueError(f"hours {value!r} must look like 09:00-17:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        return time(h1, m1), time(h2, m2)
    except ValueError as exc:
        raise ValueError(f"hours {value!r}: {exc}") from None


def _check_zone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from None


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names every offending key."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"invalid policy {source}:\n" + "\n".join(f"  - {p}" for p in problems))


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(part, str) and "[" not in part and part.startswith(("function-", "literal")):
            continue
        elif part == "[key]":
            # pydantic's marker for a mapping key that failed: the path already names the key.
            continue
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def describe_errors(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["loc"] and item["loc"][-1] == "[key]":
            message = f"unknown key ({message})"
        if not item["loc"]:
            # Cross-reference checks name their own key paths, one problem per "; ".
            problems.extend(message.split("; "))
            continue
        problems.append(f"{_location(item['loc'])}: {message}")
    return problems


def parse_policy(document: object, source: str = "<policy>") -> Policy:
    if not isinstance(document, dict):
        raise PolicyError(source, ["(top level): a policy must be a YAML mapping"])
    try:
        return Policy.model_validate(document)
    except ValidationError as exc:
        raise PolicyError(source, describe_errors(exc)) from None


def load_policy_text(text: str, source: str = "<policy>") -> Policy:
    import yaml  # here: every CLI command loads this module, few read a policy file

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(source, [f"not valid YAML: {exc}"]) from None
    return parse_policy(document, source)


def load_policy_file(path: str | Path) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), [f"cannot read file: {exc.strerror}"]) from None
    return load_policy_text(text, str(path))


def describe_targets(policy: Policy, contract: str | None = None) -> list[tuple[str, str, str, str, str, str]]:
    """Rows of (priority, entry, resolve within, updates every, at risk at, calendar): the
    effective targets under ``contract`` (None: the policy's own ``priorities``)."""
    rows = []
    for pname in sorted(policy.priorities):
        t = policy.targets(pname, contract)
        rows.append((
            pname,
            t.entry_level,
            format_duration(t.resolve_within),
            format_duration(t.customer_update_every),
            f"{t.at_risk_at:.0%}",
            t.calendar,
        ))
    return rows


def describe_ack_chain(policy: Policy, priority: str, contract: str | None = None) -> str:
    """``tier2 30m → engineering 30m → management 1h``: who must acknowledge how fast, from the
    priority's entry level up the chain, under ``contract``."""
    entry = policy.priorities[priority].entry_level  # type: ignore[index]
    chain = policy.level_ids[policy.level_ids.index(entry):]
    return " → ".join(f"{level} {format_duration(policy.ack_within(level, priority, contract))}" for level in chain)
