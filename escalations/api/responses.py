"""Declared problem responses for route definitions (OpenAPI shows them as problem+json)."""

from __future__ import annotations

from typing import Any

from escalations.api.problems import Problem, ValidationProblem

DESCRIPTIONS = {
    400: "Malformed request body: not valid JSON, not UTF-8 (problem document)",
    401: "Missing or invalid bearer token (problem document; WWW-Authenticate: Bearer)",
    403: "The token lacks the scope this route needs (problem document naming it: `missing_scope`)",
    404: "The ticket has no escalation (problem document)",
    409: "The state forbids it, or the escalation is closed (problem document naming why)",
    413: "Request body larger than the limit (problem document)",
    415: "The body is not application/json (problem document; Accept-Post: application/json)",
    422: "Invalid request: field errors in `errors` (problem document)",
    503: "Temporal or Postgres unavailable, no worker answering a query, or the run is still opening "
         "(problem document; Retry-After)",
    504: "Temporal, Postgres or the worker did not answer in time (problem document)",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": ValidationProblem if code == 422 else Problem, "description": DESCRIPTIONS[code]}
        for code in codes
    }
