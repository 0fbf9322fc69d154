"""The test policies (tests/policies/, second-scale durations) and variants of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers.paths import POLICIES


def policy_path(name: str) -> Path:
    """A test policy from tests/policies/ (second-scale durations)."""
    return POLICIES / f"{name}.yaml"


def write_policy(folder: Path, base: str = "fast", **changes: Any) -> Path:
    """A variant of a test policy: ``changes`` are deep-merged into it (dicts merge, others replace)."""

    def merge(into: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    document = yaml.safe_load(policy_path(base).read_text())
    merge(document, changes)
    path = folder / f"{document['name']}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def level_ack(policy: str, **ack_within: str) -> list[dict[str, Any]]:
    """The policy's levels with some ``ack_within`` values changed (levels are a list)."""
    levels = yaml.safe_load(policy_path(policy).read_text())["levels"]
    for level in levels:
        if level["id"] in ack_within:
            level["ack_within"] = ack_within[level["id"]]
    return levels


LATER_KEYS = ("contracts", "jira", "action_links")
"""Policy keys added after versions were first pinned (each left out of the digest when unset)."""


def released_document(policy: Any) -> dict[str, Any]:
    """``policy`` dumped as a version pinned before the later keys existed: without them, and
    without a contact's ``slack_user_id``."""
    document = {key: value for key, value in policy.model_dump(mode="json").items() if key not in LATER_KEYS}
    for responder in [*document["levels"], *document["departments"].values()]:
        for contact in responder["contacts"]:
            del contact["slack_user_id"]
    return document
