"""Local receivers for tests: a recording HTTP server (webhooks, Slack, Teams, a fake Jira)
and a recording SMTP server. Both listen on 127.0.0.1 on a port the OS picks, run in the
test's own event loop, and are used as async context managers::

    async with HttpRecorder() as http:
        http.script("/hook", Reply(500), Reply(500))     # then the default 200
        ... post to f"{http.url}/hook" ...
        [request] = await http.wait_for(1, path="/hook")

    async with SmtpRecorder(users={"bot": "s3cret"}) as smtp:
        ... send to smtp.host:smtp.port ...
        [mail] = await smtp.wait_for(1)

Scripted replies are served in order per path; once a path's script is used up it gets
the default reply (200 ``ok`` with an ``X-Request-Id``), or, under ``/rest/api/3/``, the
fake Jira (``jira_delay`` seconds late if set). ``Reply(delay=...)`` makes the server hang before answering; the handler is
cancelled when the client gives up. ``Reply(endless=True)`` answers with a body that never
ends (filler in 64 KiB chunks until the client hangs up); ``streamed_bytes`` counts what it wrote.

The SMTP recorder uses aiosmtpd's ``SMTP`` protocol directly on a server of this loop
instead of its ``Controller`` (a thread with its own loop): the OS-chosen port has no
race, and no second loop or thread is involved. It supports AUTH PLAIN/LOGIN with test
users (also without TLS, for tests only) and optionally STARTTLS with a self-signed
certificate made by the ``openssl`` command (``self_signed_cert``).
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import itertools
import json
import re
import shutil
import ssl
import subprocess
import time
import warnings
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from multidict import CIMultiDict


async def _eventually(check, count: int, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} {what} within {timeout}s, got {len(found)}")
        await asyncio.sleep(0.02)


# -- HTTP -------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One programmed answer: status, body (bytes, text or JSON-able), headers, delay first."""

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b"ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    endless: bool = False


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: str
    headers: CIMultiDict[str]
    body: bytes
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def json(self) -> Any:
        return json.loads(self.body)


class HttpRecorder:
    """Records every request; answers from per-path scripts, a fake Jira, or 200 ``ok``.

    ``jira_auth=(email, token)`` makes the fake Jira demand that basic auth (401 otherwise).
    The fake Jira answers a new comment with its ``author`` (``jira_account``: the integration
    user), as Jira Cloud does.
    """

    def __init__(self, *, jira_auth: tuple[str, str] | None = None):
        self.requests: list[Recorded] = []
        self.jira_issues: dict[str, dict[str, Any]] = {}
        self._scripts: dict[str, deque[Reply]] = {}
        self._jira_auth = jira_auth
        self.jira_delay = 0.0
        self.jira_account = {"accountId": "712020:5e1d7c3a-bot0-4f1c-9d2e-escalations", "displayName": "Escalations"}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.streamed_bytes = 0

    async def __aenter__(self) -> HttpRecorder:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies``, in order."""
        self._scripts.setdefault(path, deque()).extend(replies)

    def to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, count: int, *, path: str | None = None, timeout: float = 5.0) -> list[Recorded]:
        """At least ``count`` requests (to ``path``), polling until ``timeout``."""
        return await _eventually(
            lambda: self.requests if path is None else self.to(path), count, timeout, "requests"
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded = Recorded(request.method, request.path, request.query_string, CIMultiDict(request.headers), body)
        self.requests.append(recorded)
        script = self._scripts.get(request.path)
        if script:
            reply = script.popleft()
            if reply.endless:
                return await self._endless(request, reply)
            return await self._reply(reply)
        if request.path.startswith("/rest/api/3/"):
            if self.jira_delay:
                await asyncio.sleep(self.jira_delay)
            return self._jira(recorded)
        return await self._reply(Reply(headers={"X-Request-Id": f"req-{next(self._ids)}"}))

    async def _endless(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(status=reply.status, headers=dict(reply.headers))
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            while True:
                await response.write(chunk)
                self.streamed_bytes += len(chunk)
                await asyncio.sleep(0)
        except (ConnectionError, RuntimeError):
            # The client hung up (aiohttp raises ConnectionResetError, or RuntimeError once
            # the transport is closed): the end of the test's stream.
            return response

    @staticmethod
    async def _reply(reply: Reply) -> web.Response:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        body = reply.body
        headers = dict(reply.headers)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        return web.Response(status=reply.status, body=body, headers=headers)

    # -- fake Jira Cloud REST v3 --

    def _jira(self, request: Recorded) -> web.Response:
        if self._jira_auth is not None:
            expected = "Basic " + base64.b64encode(":".join(self._jira_auth).encode()).decode()
            if request.headers.get("Authorization") != expected:
                return web.json_response(
                    {"errorMessages": ["Client must be authenticated to access this resource."]}, status=401
                )
        if request.method != "POST":
            return web.json_response({"errorMessages": ["Method not allowed"]}, status=405)
        if request.path == "/rest/api/3/issue":
            fields = request.json().get("fields") or {}
            project = (fields.get("project") or {}).get("key")
            if not project or not fields.get("summary"):
                return web.json_response(
                    {"errorMessages": [], "errors": {"project": "valid project is required"}}, status=400
                )
            number = sum(1 for key in self.jira_issues if key.startswith(f"{project}-")) + 1
            key, issue_id = f"{project}-{number}", str(10000 + len(self.jira_issues) + 1)
            self.jira_issues[key] = {"id": issue_id, "fields": fields, "comments": []}
            return web.json_response(
                {"id": issue_id, "key": key, "self": f"{self.url}/rest/api/3/issue/{issue_id}"}, status=201
            )
        match = re.fullmatch(r"/rest/api/3/issue/([^/]+)/comment", request.path)
        if match:
            issue = self.jira_issues.get(match.group(1))
            if issue is None:
                return web.json_response({"errorMessages": ["Issue does not exist"], "errors": {}}, status=404)
            comment_id = str(20000 + sum(len(i["comments"]) for i in self.jira_issues.values()) + 1)
            issue["comments"].append(request.json()["body"])
            return web.json_response(
                {"id": comment_id, "self": f"{self.url}/rest/api/3/issue/{issue['id']}/comment/{comment_id}",
                 "author": self.jira_account},
                status=201,
            )
        return web.json_response({"errorMessages": ["Not found"]}, status=404)


# -- SMTP -------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    login: str | None
    tls: bool

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Handler:
    def __init__(self, recorder: SmtpRecorder):
        self._recorder = recorder

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self._recorder.rcpt_replies:
            return self._recorder.rcpt_replies.popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self._recorder.data_replies:
            return self._recorder.data_replies.popleft()
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self._recorder.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content,
                     login, session.ssl is not None)
        )
        return "250 2.0.0 Message accepted for delivery"


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for ``host`` (also its own CA) and key, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("the openssl command is not installed")
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


class SmtpRecorder:
    """An SMTP server that records what it accepts.

    ``users`` (login -> password) enables AUTH PLAIN/LOGIN and requires it; ``cert``
    (certificate, key) offers STARTTLS, and ``require_starttls`` refuses mail without it.
    ``rcpt_replies``/``data_replies`` queue SMTP replies (e.g. ``"451 4.3.0 Try later"``)
    given instead of accepting the next recipient/message.
    """

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        cert: tuple[Path, Path] | None = None,
        require_starttls: bool = False,
    ):
        self.users = dict(users or {})
        self.received: list[Received] = []
        self.failed_logins: list[str] = []
        self.rcpt_replies: deque[str] = deque()
        self.data_replies: deque[str] = deque()
        self._cert = cert
        self._require_starttls = require_starttls
        self._server: asyncio.AbstractServer | None = None
        self.host = "127.0.0.1"
        self.port = 0

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(login) == password:
                return AuthResult(success=True, auth_data=auth_data)
            self.failed_logins.append(login)
        return AuthResult(success=False, handled=False)

    def _protocol(self) -> SMTP:
        tls_context = None
        if self._cert is not None:
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_context.load_cert_chain(*map(str, self._cert))
        with warnings.catch_warnings():
            # Tests authenticate over plain connections on purpose.
            warnings.simplefilter("ignore")
            return SMTP(
                _Handler(self),
                hostname="smtp.recorder.test",
                authenticator=self._authenticate if self.users else None,
                auth_required=bool(self.users),
                auth_require_tls=False,
                tls_context=tls_context,
                require_starttls=self._require_starttls,
                loop=asyncio.get_running_loop(),
            )

    async def __aenter__(self) -> SmtpRecorder:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def wait_for(self, count: int, *, timeout: float = 5.0) -> list[Received]:
        return await _eventually(lambda: self.received, count, timeout, "messages")
