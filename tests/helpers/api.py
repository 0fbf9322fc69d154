"""The HTTP API for tests: its token and its settings on the session's servers."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client

from escalations.settings import ApiSettings
from tests.helpers.policies import policy_path

TOKEN = "test-token-4f1c"
"""One of the API's tokens in ``api_settings`` (beside another, to check a list is accepted)."""


def api_settings(client: Client, database_url: str, task_queue: str, **overrides: Any) -> ApiSettings:
    """Settings of an API on ``client``'s Temporal and ``database_url``, as its environment gives them."""
    environ = {
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
        "ESCALATION_API_TOKENS": f"some-other-token, {TOKEN}",
        "DATABASE_URL": database_url,
        "ESCALATION_TASK_QUEUE": task_queue,
        "ESCALATION_POLICY_FILE": str(policy_path("fast")),
        "ESCALATION_UI_URL": "http://ui.example:8233",
    }
    return ApiSettings.from_env(environ, **{"command_timeout": 20.0, **overrides})
