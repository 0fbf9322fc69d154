"""The HTTP API for tests: its tokens and its settings on the session's servers."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client

from escalations.settings import SCOPES, ApiSettings, token_entry
from tests.helpers.policies import policy_path

TOKEN = "test-token-4f1c"
"""One of the API's tokens in ``api_settings``: a bare token of the old format (every scope),
beside another, to check a list is accepted."""

NAMED_SCOPES: dict[str, list[str]] = {
    "ops": ["admin"],
    "reader": ["read"],
    **{f"all-but-{scope}": [other for other in SCOPES if other not in (scope, "admin")]
       for scope in SCOPES if scope != "admin"},
    **{f"only-{scope}": [scope] for scope in SCOPES if scope != "admin"},
}
"""Named tokens of ``api_settings``: ``token_of(name)`` is the bearer token."""


def token_of(name: str) -> str:
    return f"test-{name}-token-9b2e"


def bearer(name: str) -> dict[str, str]:
    """The Authorization header of the named token ``name``."""
    return {"Authorization": f"Bearer {token_of(name)}"}


def token_entries() -> str:
    """ESCALATION_API_TOKENS: two bare tokens, then the named ones (only their digests)."""
    named = [token_entry(name, scopes, token_of(name)) for name, scopes in NAMED_SCOPES.items()]
    return ",".join([f"some-other-token, {TOKEN}", *named])


def api_settings(client: Client, database_url: str, task_queue: str, **overrides: Any) -> ApiSettings:
    """Settings of an API on ``client``'s Temporal and ``database_url``, as its environment gives them."""
    environ = {
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
        "ESCALATION_API_TOKENS": token_entries(),
        "DATABASE_URL": database_url,
        "ESCALATION_TASK_QUEUE": task_queue,
        "ESCALATION_POLICY_FILE": str(policy_path("fast")),
        "ESCALATION_UI_URL": "http://ui.example:8233",
    }
    return ApiSettings.from_env(environ, **{"command_timeout": 20.0, **overrides})
