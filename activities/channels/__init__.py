"""One sender per channel, and what they share: errors, the delivery they get, HTTP posting.

A sender turns a rendered message into its channel's format and sends it once.
It returns a ``SendResult`` (the provider's id for the delivery) or raises
``RetryableDeliveryError`` (worth trying again later: 5xx, 429, 408, time-outs,
connection errors, SMTP 4xx) or ``PermanentDeliveryError`` (trying again cannot
help: other 4xx, missing or rejected credentials, SMTP 5xx, unusable target).
Error messages name settings by their environment variable and never contain
a secret (webhook URLs of Slack and Teams are secrets; other URLs are shown by
host only).
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

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


@dataclass(frozen=True)
class Delivery:
    intent: NotificationIntent
    message: Rendered


@dataclass(frozen=True)
class SendResult:
    provider_response_id: str
    jira_key: str | None = None


class Sender(Protocol):
    async def send(self, delivery: Delivery) -> SendResult: ...


# -- HTTP -------------------------------------------------------------------

RETRYABLE_STATUS = frozenset({408, 425, 429})
IDEMPOTENCY_HEADER = "Idempotency-Key"


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


async def post(
    http: httpx.AsyncClient,
    url: str,
    *,
    describe: str,
    timeout: float,
    content: bytes,
    headers: dict[str, str],
    auth: httpx.Auth | None = None,
) -> httpx.Response:
    """POST and classify: return a 2xx response, raise a ``DeliveryError`` otherwise.

    ``describe`` names the destination in error messages; the URL never appears in one.
    """
    try:
        response = await http.post(
            url, content=content, headers=headers, auth=auth, timeout=timeout
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
    payload: Mapping[str, Any],
    id_headers: tuple[str, ...],
) -> SendResult:
    """POST a Slack or Teams payload to the target's secret webhook URL."""
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
        content=encode(payload),
        headers={"Content-Type": "application/json", IDEMPOTENCY_HEADER: delivery.intent.key},
    )
    return SendResult(
        first_header(response, *id_headers)
        or response.text.strip()[:200]
        or str(response.status_code)
    )
