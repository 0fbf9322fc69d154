"""A tiny Jira-compatible HTTP receiver, so the demo shows a real Jira-style record.

It speaks the two calls of Jira Cloud REST v3 the Jira channel makes
(``activities/channels/jira.py``) and one to read an issue back:

- ``POST /rest/api/3/issue`` -> 201 ``{"id", "key": "ESC-1", "self"}``
- ``POST /rest/api/3/issue/{key}/comment`` -> 201 ``{"id", "self"}``
- ``GET /rest/api/3/issue/{key}`` -> the issue with its fields and comments

Requests must carry the basic auth it was given (401 otherwise, like Jira), and a
repeated ``Idempotency-Key`` gets the first answer again instead of a second issue
or comment. Issues live in memory, numbered per project from 1. It runs in the
caller's event loop on 127.0.0.1 and a port the OS picks::

    async with FakeJira(email="demo@example.test", api_token="t0ken") as jira:
        environ["ESCALATION_JIRA_BASE_URL"] = jira.url
        ...
        jira.issues["ESC-1"].comments

Not a Jira: no JQL, no transitions, no persistence. For demos and local trials only.

It also stands in for a chat tool's incoming webhooks: ``POST /hooks/{name}`` records the JSON
message (``messages``) and answers ``ok`` as Slack does, so the demo can read the pages it sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

ISSUE_PATH = "/rest/api/3/issue"


@dataclass
class Issue:
    id: str
    key: str
    fields: dict[str, Any]
    created: datetime
    comments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return str(self.fields.get("summary") or "")

    @property
    def labels(self) -> list[str]:
        return [str(label) for label in self.fields.get("labels") or []]


class _QuietServer(uvicorn.Server):
    """uvicorn without its own SIGINT/SIGTERM handlers: the host process keeps Ctrl-C."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _error(status: int, *messages: str, **errors: str) -> JSONResponse:
    return JSONResponse({"errorMessages": list(messages), "errors": errors}, status_code=status)


class FakeJira:
    """A Jira Cloud look-alike on 127.0.0.1; use as an async context manager."""

    def __init__(self, *, email: str, api_token: str, host: str = "127.0.0.1") -> None:
        self.email = email
        self.api_token = api_token
        self.host = host
        self.issues: dict[str, Issue] = {}
        self.messages: list[tuple[str, dict[str, Any]]] = []  # (hook name, message) as received
        self.url = ""
        self._answers: dict[str, tuple[int, dict[str, Any]]] = {}
        self._ids = 10_000
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = self._build_app()

    # -- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> FakeJira:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="fake-jira")
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # raises what stopped it
                raise RuntimeError("the fake Jira stopped before it started")
            await asyncio.sleep(0.02)
        self.url = f"http://{self.host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task

    # -- the API ------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake Jira", docs_url=None, redoc_url=None, openapi_url=None)

        @app.post(ISSUE_PATH)
        async def create_issue(request: Request) -> JSONResponse:
            return await self._once(request, self._create_issue)

        @app.post(ISSUE_PATH + "/{key}/comment")
        async def add_comment(key: str, request: Request) -> JSONResponse:
            return await self._once(request, lambda body: self._add_comment(key, body))

        @app.get(ISSUE_PATH + "/{key}")
        async def get_issue(key: str, request: Request) -> JSONResponse:
            if not self._authorised(request):
                return _error(401, "Client must be authenticated to access this resource.")
            issue = self.issues.get(key)
            if issue is None:
                return _error(404, "Issue does not exist or you do not have permission to see it.")
            return JSONResponse({
                "id": issue.id, "key": issue.key, "self": f"{self.url}{ISSUE_PATH}/{issue.id}",
                "fields": {**issue.fields, "created": issue.created.isoformat(),
                           "comment": {"total": len(issue.comments), "comments": issue.comments}},
            })

        @app.post("/hooks/{name}")
        async def incoming_webhook(name: str, request: Request) -> PlainTextResponse:
            try:
                message = await request.json()
            except ValueError:
                return PlainTextResponse("invalid_payload", status_code=400)
            if not isinstance(message, dict):
                return PlainTextResponse("invalid_payload", status_code=400)
            self.messages.append((name, message))
            return PlainTextResponse("ok")

        return app

    def hook_url(self, name: str) -> str:
        """The address of an incoming webhook named ``name`` (a Slack channel's, say)."""
        return f"{self.url}/hooks/{name}"

    def _authorised(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(given, f"{self.email}:{self.api_token}")

    async def _once(self, request: Request, handle: Any) -> JSONResponse:
        """Authenticate, parse JSON, and answer a repeated Idempotency-Key as the first time."""
        if not self._authorised(request):
            return _error(401, "Client must be authenticated to access this resource.")
        key = request.headers.get("idempotency-key")
        if key and key in self._answers:
            status, body = self._answers[key]
            return JSONResponse(body, status_code=status)
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The request body is not JSON.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        status, answer = handle(body)
        if key and status < 300:
            self._answers[key] = (status, answer)
        return JSONResponse(answer, status_code=status)

    def _next_id(self) -> str:
        self._ids += 1
        return str(self._ids)

    def _create_issue(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        fields = body.get("fields")
        if not isinstance(fields, dict):
            return 400, {"errorMessages": ["fields are required"], "errors": {}}
        project = (fields.get("project") or {}).get("key") if isinstance(fields.get("project"), dict) else None
        errors = {}
        if not project:
            errors["project"] = "valid project is required"
        if not fields.get("summary"):
            errors["summary"] = "You must specify a summary of the issue."
        if errors:
            return 400, {"errorMessages": [], "errors": errors}
        number = 1 + sum(1 for issue in self.issues.values() if issue.key.startswith(f"{project}-"))
        issue = Issue(id=self._next_id(), key=f"{project}-{number}", fields=fields,
                      created=datetime.now(UTC))
        self.issues[issue.key] = issue
        return 201, {"id": issue.id, "key": issue.key, "self": f"{self.url}{ISSUE_PATH}/{issue.id}"}

    def _add_comment(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        issue = self.issues.get(key)
        if issue is None:
            return 404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."],
                         "errors": {}}
        if not isinstance(body.get("body"), dict):
            return 400, {"errorMessages": [], "errors": {"comment": "Comment body can not be empty!"}}
        comment_id = self._next_id()
        issue.comments.append({"id": comment_id, "body": body["body"],
                               "created": datetime.now(UTC).isoformat()})
        return 201, {"id": comment_id, "self": f"{self.url}{ISSUE_PATH}/{issue.id}/comment/{comment_id}"}
