"""The vendors' own validators of what notifications send (sources in tests/fixtures/README.md).

* Slack: ``slack_sdk``'s Block Kit models parse every block, check their limits
  (``validate_json``) and give it back unchanged (so every field was understood);
* Teams: the Adaptive Card JSON schema of the version the card declares (adaptivecards.io,
  from microsoft/AdaptiveCards), formats checked;
* Jira: Atlassian's ADF JSON schema (``@atlaskit/adf-schema``'s ``json-schema/v1/full.json``).

Each returns the list of problems found (empty when the payload is valid), so a failing test
shows them all.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import Draft4Validator, Draft6Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

from tests.helpers.paths import ROOT

FIXTURES = ROOT / "tests" / "fixtures"
ADAPTIVE_CARD_SCHEMAS = {
    "1.4": FIXTURES / "adaptive-cards" / "adaptive-card-1.4.json",
    "1.5": FIXTURES / "adaptive-cards" / "adaptive-card-1.5.json",
}
# Teams' own card extension (full width); the Adaptive Card schema allows no extra properties.
TEAMS_EXTENSION = {"msteams": {"width": "Full"}}


def slack_problems(payload: dict[str, Any]) -> list[str]:
    problems = []
    if not isinstance(payload.get("text"), str) or not payload["text"]:
        problems.append("no top-level text (Slack's notification text)")
    for index, raw in enumerate(payload.get("blocks", [])):
        block = Block.parse(raw)
        if block is None:
            problems.append(f"block {index}: not a Block Kit block: {raw}")
            continue
        try:
            block.validate_json()
        except SlackObjectFormationError as exc:
            problems.append(f"block {index} ({raw['type']}): {exc}")
        if block.to_dict() != raw:
            problems.append(f"block {index}: slack_sdk reads it differently: {block.to_dict()} != {raw}")
    if len(payload.get("blocks", [])) > 50:
        problems.append(f"{len(payload['blocks'])} blocks (at most 50)")
    return problems


@cache
def _card_validator(version: str) -> Draft6Validator:
    schema = json.loads(ADAPTIVE_CARD_SCHEMAS[version].read_text(encoding="utf-8"))
    return Draft6Validator(schema, format_checker=FormatChecker())


def adaptive_card_problems(card: dict[str, Any]) -> list[str]:
    """Problems of ``card`` against the schema of the version it declares."""
    version = card.get("version")
    if version not in ADAPTIVE_CARD_SCHEMAS:
        return [f"declares version {version!r}; schemas here: {sorted(ADAPTIVE_CARD_SCHEMAS)}"]
    problems = [f"msteams is {card.get('msteams')!r}, not Teams' full-width extension"
                for key in TEAMS_EXTENSION if key in card and card[key] != TEAMS_EXTENSION[key]]
    plain = {key: value for key, value in card.items() if key not in TEAMS_EXTENSION}
    return problems + _described(_card_validator(version).iter_errors(plain))


@cache
def _adf_validator() -> Draft4Validator:
    schema = json.loads((FIXTURES / "adf" / "full.json").read_text(encoding="utf-8"))
    return Draft4Validator(schema, format_checker=FormatChecker())


def adf_problems(document: dict[str, Any]) -> list[str]:
    return _described(_adf_validator().iter_errors(document))


def _cause(error: ValidationError) -> ValidationError:
    """The error of the ``anyOf`` branch meant for the instance: the one its ``type`` matched."""
    while error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.schema_path[0], []).append(sub)
        meant = [subs for subs in branches.values()
                 if not any(sub.validator == "enum" and list(sub.path)[-1:] == ["type"] for sub in subs)]
        if len(meant) != 1:
            return best_match([error])
        error = max(meant[0], key=lambda sub: len(sub.absolute_path))
    return error


def _described(errors: Any) -> list[str]:
    found: list[str] = []
    for error in errors:
        cause = _cause(error)
        found.append(f"{'/'.join(map(str, cause.absolute_path)) or '(root)'}: {cause.message[:300]}")
    return found
