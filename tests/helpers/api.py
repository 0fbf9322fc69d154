"""The HTTP API for tests: its tokens, its settings on the session's servers, and the API
served in-process (httpx on the app) or by uvicorn on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from temporalio.client import Client

from escalations.api.server import serve
from escalations.settings import SCOPES, ApiSettings, token_entry
from tests.helpers.codec import TEST_ENV
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
        **TEST_ENV,
    }
    return ApiSettings.from_env(environ, **{"command_timeout": 20.0, **overrides})


@asynccontextmanager
async def in_process(app: FastAPI, token: str = TOKEN) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on ``app`` (its lifespan entered) sending ``token``."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            yield http


@asynccontextmanager
async def running_api(settings: ApiSettings, port: int = 0) -> AsyncIterator[str]:
    """serve() on ``port`` (0: a free one); yields its base URL; stops it on exit."""
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings.with_overrides(port=port), stop, on_ready=ready.set_result))
    await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises the startup error
    assert ready.done(), "the API did not start within 30 s"
    try:
        yield ready.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)
