"""Acting from the page in tests: a policy whose people are paged on local receivers, the
worker's and the API's action-link settings, the API in-process, and Slack's request signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import yaml
from temporalio.client import Client

from escalations.api.app import create_app
from tests.helpers.api import TOKEN, api_settings
from tests.helpers.receivers import HttpRecorder, Recorded

ACTION_KEY = "action-key-for-tests-0123456789abcdef"
NEW_ACTION_KEY = "a-newer-action-key-for-tests-fedcba987654"
WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789abcdef"
SLACK_SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
PUBLIC_URL = "https://escalations.example.test"
DANA, ALEX, SAM = "U0DANA1", "U0ALEX1", "U0SAM01"


def responders_policy(folder: Path, hooks: str, *, name: str = "links", chat: str = "webhook",
                      expire_after: str | None = None) -> Path:
    """tier1 Sam, tier2 Dana, engineering Alex, management Morgan: each paged on ``chat`` (a webhook to
    ``hooks``/<level>, or Slack's #<level>), each with a Slack member id but Morgan. Nobody's ack
    clock runs out during a test (1 h)."""

    def contact(person: str, level: str, slack_id: str | None) -> dict[str, Any]:
        found: dict[str, Any] = {"name": person, "channel": chat,
                                 "target": f"{hooks}/{level}" if chat == "webhook" else f"#{level}"}
        if slack_id:
            found["slack_user_id"] = slack_id
        return found

    document: dict[str, Any] = {
        "name": name, "version": 1,
        "levels": [
            {"id": "tier1", "name": "Tier 1 Support", "ack_within": "1h", "contacts": [contact("Sam", "tier1", SAM)]},
            {"id": "tier2", "name": "Tier 2 Support", "ack_within": "1h",
             "contacts": [contact("Dana", "tier2", DANA)]},
            {"id": "engineering", "name": "Engineering", "ack_within": "1h",
             "contacts": [contact("Alex", "engineering", ALEX)]},
            {"id": "management", "name": "Management", "ack_within": "1h",
             "contacts": [contact("Morgan", "management", None)]},
        ],
        "routes": {"integration": "engineering"},
        "priorities": {p: {"entry_level": "tier2", "resolve_within": "4h", "customer_update_every": "2h",
                           "breach_notifies": "management"} for p in ("P1", "P2", "P3", "P4")},
        "customer": {"channel": "log"},
    }
    if expire_after is not None:
        document["action_links"] = {"expire_after": expire_after}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def worker_environ(hooks: str, *, action_key: str = ACTION_KEY, slack: bool = False) -> dict[str, str]:
    """The worker's notification settings: links on (``PUBLIC_URL``), webhooks signed; with ``slack``
    every #<level> channel posts to ``hooks``/slack-<level> and buttons act in Slack."""
    environ = {"ESCALATION_ACTION_KEY": action_key, "ESCALATION_PUBLIC_URL": PUBLIC_URL,
               "ESCALATION_WEBHOOK_SECRET": WEBHOOK_SECRET}
    if slack:
        environ["ESCALATION_SLACK_SIGNING_SECRET"] = SLACK_SIGNING_SECRET
        for level in ("tier1", "tier2", "engineering", "management"):
            environ[f"ESCALATION_SLACK_WEBHOOK_URL_{level.upper()}"] = f"{hooks}/slack-{level}"
    return environ


@asynccontextmanager
async def api_client(client: Client, database_url: str, task_queue: str, policy: Path,
                     **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process (its lifespan entered), with action links and Slack configured."""
    settings = api_settings(client, database_url, task_queue, **{
        "policy_file": str(policy), "action_key": ACTION_KEY, "slack_signing_secret": SLACK_SIGNING_SECRET,
        **overrides})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            yield http


def path_of(url: str) -> str:
    """The path of an action link, checked to be absolute under ``PUBLIC_URL``."""
    assert url.startswith(f"{PUBLIC_URL}/actions/"), url
    return urlsplit(url).path


async def page(hooks: HttpRecorder, path: str, template: str, *, timeout: float = 20.0) -> dict[str, Any]:
    """The first webhook page of ``template`` delivered to ``path``."""
    def found() -> list[Recorded]:
        return [r for r in hooks.to(path) if r.json().get("template") == template]

    deadline = time.monotonic() + timeout
    while not found():
        assert time.monotonic() < deadline, f"no {template} page to {path} within {timeout}s: " \
                                            f"{[r.json().get('template') for r in hooks.to(path)]}"
        await hooks.wait_for(len(hooks.to(path)) + 1, path=path, timeout=max(0.1, deadline - time.monotonic()))
    return found()[0].json()


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's ``X-Slack-Signature``, computed as Slack documents it (not with its SDK)."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slack_press(token: str, user_id: str, response_url: str, *, action_id: str = "acknowledge") -> bytes:
    """The body Slack posts when a member presses a button (``application/x-www-form-urlencoded``)."""
    payload = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "team_id": "T0TEAM1"},
        "api_app_id": "A0APP01",
        "team": {"id": "T0TEAM1", "domain": "acme-support"},
        "container": {"type": "message", "message_ts": "1795770000.000100", "channel_id": "C0TIER2",
                      "is_ephemeral": False},
        "trigger_id": "1795770000.123.abc",
        "channel": {"id": "C0TIER2", "name": "tier2"},
        "response_url": response_url,
        "actions": [{"action_id": action_id, "block_id": "escalation_actions", "value": token, "type": "button",
                     "text": {"type": "plain_text", "text": "Acknowledge"}, "action_ts": "1795770001.000200"}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def slack_headers(body: bytes, *, secret: str = SLACK_SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": slack_signature(secret, stamp, body)}
