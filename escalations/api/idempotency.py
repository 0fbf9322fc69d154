"""``Idempotency-Key`` for POST /escalations, kept in Postgres (table ``api_idempotency``).

A key belongs to the calling principal (``api:<token name>``): two callers sending the same
key are two keys. A key is claimed before the start and completed with the 201 response; an
identical retry (same key, same canonical body) replays that response, the same
key with a different body is refused. A failed attempt releases its claim so a
retry runs again. Keys expire after ``ttl`` (housekeeping purges them); a claim left behind
by a crashed process is taken over after ``ABANDONED_AFTER``. The statements are in
``escalations/db/idempotency.py``; this module decides what the API answers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from pydantic import BaseModel

from escalations.api.problems import ProblemError
from escalations.db import idempotency as stored_keys

ABANDONED_AFTER = timedelta(minutes=2)
KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
"""Printable ASCII without spaces, 1–200 characters (a UUID is the usual choice)."""


def request_digest(model: BaseModel) -> str:
    canonical = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


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
