"""``Idempotency-Key`` for POST /escalations and every command, kept in Postgres (table
``api_idempotency``).

A key belongs to the calling principal (``api:<token name>``): two callers sending the same
key are two keys. A key is claimed before the start (or command) and completed with its
response; an identical retry (same key, same canonical request) replays that response, the
same key with a different request is refused. For commands the request is the command's
name, the ticket and the body, so a key sent again to another command or ticket is refused
too. A failed attempt releases its claim so a retry runs again. Keys expire after ``ttl``
(housekeeping purges them); a claim left behind by a crashed process is taken over after
``ABANDONED_AFTER``. The statements are in ``escalations/db/idempotency.py``; this module
decides what the API answers.

A command's Temporal update id is derived from the principal, the key and the request
(``update_id``): a retry whose first attempt reached the run but whose answer was lost
(a 504, a released claim) is deduplicated by Temporal as well, which answers with the
first outcome instead of applying the command twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from escalations.api.problems import ProblemError
from escalations.db import idempotency as stored_keys

ABANDONED_AFTER = timedelta(minutes=2)
KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
"""Printable ASCII without spaces, 1–200 characters (a UUID is the usual choice)."""


START_SCOPE = "POST /escalations"
COMMAND_SCOPE = "POST /escalations/{ticket_id}/{command}"


def request_digest(model: BaseModel) -> str:
    canonical = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def command_digest(command: str, ticket_id: str, body: BaseModel) -> str:
    """The canonical request of a command: which command, on which ticket, with which body."""
    canonical = json.dumps({"command": command, "ticket_id": ticket_id, "body": body.model_dump(mode="json")},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def update_id(principal: str, key: str, digest: str) -> str:
    """The Temporal update id of a command sent with ``key``: the same for every retry of it."""
    return "idem-" + hashlib.sha256(f"{principal}\n{key}\n{digest}".encode()).hexdigest()


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: dict[str, Any]


async def claim(
    pool: asyncpg.Pool, principal: str, scope: str, key: str, digest: str, now: datetime, ttl: timedelta
) -> Replay | None:
    """None: this request owns the key and must run. Replay: answer with the stored response."""
    owned, row = await stored_keys.claim(pool, principal, scope, key, digest, now, ttl=ttl,
                                         abandoned_after=ABANDONED_AFTER)
    if owned:
        return None
    if row is None:  # released between the two statements: the caller may try again
        raise ProblemError(409, "a request with this Idempotency-Key just failed; retry it",
                           slug="idempotency-key-in-flight", headers={"Retry-After": "1"})
    if row["request_sha256"] != digest:
        raise ProblemError(
            422, "Idempotency-Key reused with a different request", slug="idempotency-key-reused",
            errors=[{"loc": ["header", "Idempotency-Key"],
                     "msg": "Idempotency-Key reused with a different request", "type": "idempotency_key_reused"}],
        )
    if row["response"] is None:
        raise ProblemError(409, "a request with this Idempotency-Key is still in progress; retry it shortly",
                           slug="idempotency-key-in-flight", headers={"Retry-After": "1"})
    return Replay(status_code=row["status_code"], body=row["response"])


async def complete(pool: asyncpg.Pool, principal: str, scope: str, key: str, status_code: int,
                   body: dict[str, Any], now: datetime) -> None:
    await stored_keys.complete(pool, principal, scope, key, status_code, body, now)


async def release(pool: asyncpg.Pool, principal: str, scope: str, key: str) -> None:
    await stored_keys.release(pool, principal, scope, key)


REPLAYED_HEADER = "Idempotent-Replayed"


async def run_command(pool: asyncpg.Pool, principal: str, key: str | None, digest: str, ttl: timedelta,
                      command: Callable[[str | None], Awaitable[BaseModel]]) -> BaseModel | JSONResponse:
    """Run ``command(update_id)`` once per key: its 200 answer is stored and replayed to an
    identical retry (``Idempotent-Replayed: true``). Without a key it simply runs (update id None)."""
    if key is None:
        return await command(None)
    replay = await claim(pool, principal, COMMAND_SCOPE, key, digest, _now(), ttl)
    if replay is not None:
        return JSONResponse(replay.body, status_code=replay.status_code, headers={REPLAYED_HEADER: "true"})
    try:
        result = await command(update_id(principal, key, digest))
    except BaseException:  # the request deadline's cancellation too: a retry may run (same update id) at once
        await release(pool, principal, COMMAND_SCOPE, key)
        raise
    await complete(pool, principal, COMMAND_SCOPE, key, 200, result.model_dump(mode="json"), _now())
    return result


def _now() -> datetime:
    return datetime.now(timezone.utc)
