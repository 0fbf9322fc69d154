"""One sender per channel, and what they share: errors, the delivery they get, HTTP posting.

A sender turns a rendered message into its channel's format (``prepare``: pure, no I/O,
so a message that cannot be formatted fails on its own, before anything is sent, as
``UnrenderableError``) and sends it once (``send``).
It returns a ``SendResult`` (the provider's id for the delivery) or raises
``RetryableDeliveryError`` (worth trying again later: 5xx, 429, 408, time-outs,
connection errors, SMTP 4xx) or ``PermanentDeliveryError`` (trying again cannot
help: other 4xx, missing or rejected credentials, SMTP 5xx, unusable target).
Error messages name settings by their environment variable and never contain
a secret (webhook URLs of Slack and Teams are secrets; other URLs are shown by
host only). Receivers' answers are read up to ``ESCALATION_NOTIFY_MAX_RESPONSE_BYTES``
and no further: a receiver cannot make the worker hold an answer of any size.
"""

from __future__ import annotations

import email.utils
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlsplit

import httpx

from activities.templates import Rendered
from escalations.settings import NotificationSettings
from schemas.notifications import NotificationIntent


class DeliveryError(Exception):
    """A delivery that did not happen; the message is safe to store and show."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RetryableDeliveryError(DeliveryError):
    pass


class PermanentDeliveryError(DeliveryError):
    pass


class UnrenderableError(PermanentDeliveryError):
    """The message cannot be put into its channel's format: a permanent failure of one intent."""


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    intent: NotificationIntent
    message: Rendered
    payload: Any = None  # the channel's format of ``message``, once ``prepare``d


@dataclass(frozen=True)
class SendResult:
    provider_response_id: str
    jira_key: str | None = None


class Sender(Protocol):
    def prepare(self, delivery: Delivery) -> Delivery: ...

    async def send(self, delivery: Delivery) -> SendResult: ...


def prepared(delivery: Delivery, build: Callable[[Delivery], Any]) -> Delivery:
    """``delivery`` with its payload built by ``build``, unless it already has one.

    Whatever goes wrong while formatting is a property of this one message (its content
    or its template), so it becomes an ``UnrenderableError`` for this intent alone
    instead of failing the round of every other intent; the traceback is logged.
    """
    if delivery.payload is not None:
        return delivery
    try:
        payload = build(delivery)
    except DeliveryError:
        raise
    except Exception as exc:
        intent = delivery.intent
        log.exception("cannot render notification %s (%s for %s)", intent.key, intent.template, intent.channel)
        raise UnrenderableError(
            f"cannot render {intent.template} for {intent.channel}: {type(exc).__name__}: {exc}"
        ) from exc
    return replace(delivery, payload=payload)


# -- HTTP -------------------------------------------------------------------

RETRYABLE_STATUS = frozenset({408, 425, 429})
IDEMPOTENCY_HEADER = "Idempotency-Key"
TRUNCATED = "escalations.truncated"  # response extension: the answer was longer than the cap

# Printable ASCII but "%" stays as it is; anything else (a contact's name with an umlaut, a
# line break) is percent-encoded, so a key is always a valid header value and still the same
# on every attempt.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_value(key: str) -> str:
    """The idempotency key as it goes into a header (``Idempotency-Key``, ``webhook-id``)."""
    return quote(key, safe=_HEADER_SAFE)


def encode(body: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that are sent (and, for webhooks, signed)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def host_of(url: str) -> str:
    """A URL reduced to scheme and host, for messages (paths and queries may hold tokens)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not parts.hostname:
        return "<invalid URL>"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _snippet(response: httpx.Response, limit: int = 300) -> str:
    text = " ".join(response.text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes of the body as sent, and whether there was more (left unread).

    Raw bytes, never decompressed: a small compressed answer cannot grow past the cap.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks)[:cap], True
    return b"".join(chunks), False


async def post(
    http: httpx.AsyncClient,
    url: str,
    *,
    describe: str,
    timeout: float,
    content: bytes,
    headers: dict[str, str],
    max_body: int,
    auth: httpx.Auth | None = None,
) -> httpx.Response:
    """POST and classify: return a 2xx response, raise a ``DeliveryError`` otherwise.

    ``describe`` names the destination in error messages; the URL never appears in one.
    The answer is streamed and at most ``max_body`` bytes of it are kept (the connection is
    closed on the rest); the returned response holds them, with ``extensions[TRUNCATED]``
    set when there was more. Answers are asked for uncompressed and never decompressed.
    """
    try:
        async with http.stream(
            "POST", url, content=content, headers={**headers, "Accept-Encoding": "identity"}, auth=auth,
            timeout=timeout,
        ) as streamed:
            body, truncated = await _read_capped(streamed, max_body)
        # The body is kept as it came: framing and encoding headers no longer describe it.
        kept = [(k, v) for k, v in streamed.headers.multi_items()
                if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
        response = httpx.Response(
            streamed.status_code, headers=kept, content=body, request=streamed.request,
            extensions={**streamed.extensions, TRUNCATED: truncated},
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL):
        raise PermanentDeliveryError(f"{describe}: not a usable http(s) URL") from None
    except httpx.TimeoutException as exc:
        raise RetryableDeliveryError(
            f"{describe}: no response within {timeout:g}s ({type(exc).__name__})"
        ) from None
    except httpx.TransportError as exc:
        raise RetryableDeliveryError(f"{describe}: {type(exc).__name__}: {exc}") from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    summary = f"{describe}: HTTP {status} {response.reason_phrase}".rstrip()
    body = _snippet(response)
    if body:
        summary += f": {body}"
    if status in RETRYABLE_STATUS or status >= 500:
        raise RetryableDeliveryError(summary, retry_after=retry_after(response))
    raise PermanentDeliveryError(summary)


def first_header(response: httpx.Response, *names: str) -> str | None:
    for name in names:
        value = response.headers.get(name)
        if value:
            return value
    return None


async def send_chat(
    settings: NotificationSettings,
    http: httpx.AsyncClient,
    delivery: Delivery,
    *,
    channel: Literal["slack", "teams"],
    label: str,
    payload: bytes,
    id_headers: tuple[str, ...],
) -> SendResult:
    """POST a Slack or Teams payload (JSON bytes) to the target's secret webhook URL."""
    target = delivery.intent.target
    where = f"{label} webhook for {target or 'the default channel'}"
    url = settings.chat_webhook_url(channel, target)
    if url is None:
        names = " or ".join(settings.chat_webhook_env_names(channel, target))
        raise PermanentDeliveryError(f"no {label} webhook URL for {target or 'the default channel'}: "
                                     f"set {names}")
    response = await post(
        http,
        url.get_secret_value(),
        describe=where,
        timeout=settings.request_timeout,
        content=payload,
        headers={"Content-Type": "application/json", IDEMPOTENCY_HEADER: header_value(delivery.intent.key)},
        max_body=settings.max_response_bytes,
    )
    return SendResult(
        first_header(response, *id_headers)
        or response.text.strip()[:200]
        or str(response.status_code)
    )
