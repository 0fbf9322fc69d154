"""The documented JSON of ``escalations status|list|kpis --json`` (docs/schemas/cli-*.schema.json)."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator

from tests.helpers.paths import ROOT

SCHEMAS = ROOT / "docs" / "schemas"


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"cli-{name}.schema.json").read_text(encoding="utf-8"))


def validate(name: str, document: Any) -> None:
    """Raise the first violation of ``docs/schemas/cli-<name>.schema.json`` (formats checked too)."""
    document_schema = schema(name)
    Draft202012Validator.check_schema(document_schema)
    Draft202012Validator(document_schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(document)
