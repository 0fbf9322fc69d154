"""Page tokens of ``GET /escalations``: Temporal's visibility token, wrapped and bound to the filter.

The token a caller sees is opaque (base64url of a small JSON document) and holds Temporal's
own next-page token beside a digest of the visibility query it belongs to and a checksum of
both. A token is only good with the filter that produced it: sent with another filter it is
refused (422 naming ``page_token``) instead of silently continuing another listing. The page
size may change between pages. A token that is not one of ours (cut short, edited: the
checksum fails) is the same 422 without asking Temporal, whose answer to a garbled token is
an unclassified error it retries; one Temporal refuses anyway is a 422 too (the route).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from escalations.api.problems import ProblemError

VERSION = 1


def _digest(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _checksum(bound: str, inner: str) -> str:
    return hashlib.sha256(f"{VERSION}:{bound}:{inner}".encode()).hexdigest()[:16]


def encode(temporal_token: bytes, query: str) -> str:
    bound, inner = _digest(query), _b64(temporal_token)
    document = {"v": VERSION, "q": bound, "t": inner, "c": _checksum(bound, inner)}
    return _b64(json.dumps(document, separators=(",", ":")).encode())


def decode(token: str, query: str) -> bytes:
    """Temporal's token inside ``token``; 422 when it is not ours or belongs to another filter."""
    try:
        document: Any = json.loads(_unb64(token))
        if not isinstance(document, dict) or document.get("v") != VERSION:
            raise ValueError("not a page token")
        bound, inner = document["q"], document["t"]
        if not isinstance(bound, str) or not isinstance(inner, str) or document["c"] != _checksum(bound, inner):
            raise ValueError("not a page token")
        temporal_token = _unb64(inner)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise invalid("page_token is not a token this API gave out; start again without it") from None
    if bound != _digest(query):
        raise invalid("page_token belongs to another filter: send the same status, priority, level, "
                      "customer_id, category and kind as the request that returned it")
    return temporal_token


def invalid(message: str) -> ProblemError:
    return ProblemError(422, message, slug="invalid-page-token",
                        errors=[{"loc": ["query", "page_token"], "msg": message, "type": "invalid_page_token"}])
