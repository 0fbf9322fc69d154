"""Delivery of notification intents: at least once on the wire, exactly once in the ledger.

Every intent has a row in ``notifications`` keyed by its idempotency key. A
delivery claims the row with a lease (``status = 'sending'`` until
``claimed_until``), sends, and records the result, each step its own short
transaction; nothing is held open across a network call. So:

* a row already ``sent`` is never sent again (a repeated activity attempt, a
  replayed batch);
* a row ``failed`` (permanent) is reported again, not retried;
* a row claimed by a live lease belongs to a concurrent attempt: this attempt
  leaves it alone and asks Temporal to retry later;
* a claim whose worker died expires and is taken over; the receiver then sees
  the same ``Idempotency-Key`` (webhooks, Slack, Teams, Jira) or ``Message-ID``
  (e-mail) again and can drop the repeat.

Retryable failures (5xx, 429, 408, time-outs, connection errors, SMTP 4xx) put
the row back to ``pending`` and, once every intent of the batch has had its
turn, raise ``ApplicationError(type="DeliveryRetryable")`` so Temporal backs
off; permanent ones mark the row ``failed`` and come back in
``DeliveryOutcome.failed`` for the workflow to record. Messages to one
destination (channel + target) keep their order: after a retryable failure
the rest of that destination's intents wait for the next attempt. Different
destinations are served concurrently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from urllib.parse import quote

import asyncpg
import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.channels import (
    Delivery,
    PermanentDeliveryError,
    RetryableDeliveryError,
    Sender,
    build_senders,
)
from activities.templates import Rendered, render
from schemas.durations import parse_duration
from schemas.notifications import (
    DeliveryBatch,
    DeliveryFailure,
    DeliveryOutcome,
    NotificationIntent,
)

log = logging.getLogger(__name__)

ChatChannel = Literal["slack", "teams"]
_CHAT_ENV = {"slack": "ESCALATION_SLACK_WEBHOOK_URL", "teams": "ESCALATION_TEAMS_WEBHOOK_URL"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def normalise_target(target: str) -> str:
    """``#eng-oncall`` -> ``ENG_ONCALL`` (the suffix of a per-target environment variable)."""
    return re.sub(r"[^A-Z0-9]+", "_", target.upper()).strip("_")


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: use true or false")


def _seconds(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if not isinstance(parsed, timedelta):
        raise ValueError(f"{name}={value!r}: use seconds or a duration such as 10s or 2m")
    return parsed.total_seconds()


def _integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a whole number") from None


class NotificationSettings(BaseModel):
    """Channel endpoints and credentials; built once at start-up with ``from_env``.

    Secrets are ``SecretStr`` (their repr is masked) and ``redact`` removes them
    from any text that is about to be logged or stored.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_timeout: float = Field(10.0, gt=0)
    lease_seconds: float = Field(120.0, gt=0)
    max_parallel: int = Field(8, ge=1)
    max_retry_delay: float = Field(300.0, gt=0)
    ui_url: str = "http://localhost:8233"
    namespace: str = "default"

    webhook_secret: SecretStr | None = None
    slack_webhook_url: SecretStr | None = None
    slack_webhook_urls: dict[str, SecretStr] = Field(default_factory=dict)
    teams_webhook_url: SecretStr | None = None
    teams_webhook_urls: dict[str, SecretStr] = Field(default_factory=dict)

    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_tls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    smtp_ca_file: str | None = None

    jira_base_url: str | None = None
    jira_email: str | None = None
    jira_api_token: SecretStr | None = None
    jira_issue_type: str = "Task"
    jira_project: str | None = None

    @model_validator(mode="after")
    def _coherent(self) -> NotificationSettings:
        if self.lease_seconds < 3 * self.request_timeout:
            raise ValueError(
                f"ESCALATION_NOTIFY_LEASE ({self.lease_seconds:g}s) must be at least three times "
                f"ESCALATION_NOTIFY_TIMEOUT ({self.request_timeout:g}s): a claim must outlive its send"
            )
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError(
                "ESCALATION_SMTP_TLS (implicit TLS, port 465) and ESCALATION_SMTP_STARTTLS exclude "
                "each other; set ESCALATION_SMTP_STARTTLS=false"
            )
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> NotificationSettings:
        env = {k: v for k, v in environ.items() if v is not None and v.strip() != ""}
        values: dict[str, object] = {}

        def take(key: str, name: str, convert=lambda n, v: v) -> None:  # noqa: E731
            if name in env:
                values[key] = convert(name, env[name].strip())

        take("request_timeout", "ESCALATION_NOTIFY_TIMEOUT", _seconds)
        take("lease_seconds", "ESCALATION_NOTIFY_LEASE", _seconds)
        take("max_parallel", "ESCALATION_NOTIFY_PARALLEL", _integer)
        take("ui_url", "ESCALATION_UI_URL")
        take("namespace", "TEMPORAL_NAMESPACE")
        take("webhook_secret", "ESCALATION_WEBHOOK_SECRET")
        take("smtp_host", "ESCALATION_SMTP_HOST")
        take("smtp_port", "ESCALATION_SMTP_PORT", _integer)
        take("smtp_starttls", "ESCALATION_SMTP_STARTTLS", _flag)
        take("smtp_tls", "ESCALATION_SMTP_TLS", _flag)
        take("smtp_username", "ESCALATION_SMTP_USERNAME")
        take("smtp_password", "ESCALATION_SMTP_PASSWORD")
        take("smtp_from", "ESCALATION_SMTP_FROM")
        take("smtp_ca_file", "ESCALATION_SMTP_CA_FILE")
        take("jira_base_url", "ESCALATION_JIRA_BASE_URL")
        take("jira_email", "ESCALATION_JIRA_EMAIL")
        take("jira_api_token", "ESCALATION_JIRA_API_TOKEN")
        take("jira_issue_type", "ESCALATION_JIRA_ISSUE_TYPE")
        take("jira_project", "ESCALATION_JIRA_PROJECT")
        if values.get("smtp_tls") and "ESCALATION_SMTP_STARTTLS" not in env:
            values["smtp_starttls"] = False
        for channel, prefix in _CHAT_ENV.items():
            take(f"{channel}_webhook_url", prefix)
            values[f"{channel}_webhook_urls"] = {
                normalise_target(name[len(prefix) + 1 :]): value.strip()
                for name, value in env.items()
                if name.startswith(prefix + "_") and len(name) > len(prefix) + 1
            }
        return cls.model_validate(values)

    # -- lookups ----------------------------------------------------------

    def chat_webhook_env_names(self, channel: ChatChannel, target: str | None) -> list[str]:
        prefix = _CHAT_ENV[channel]
        suffix = normalise_target(target) if target else ""
        return [f"{prefix}_{suffix}", prefix] if suffix else [prefix]

    def chat_webhook_url(self, channel: ChatChannel, target: str | None) -> SecretStr | None:
        specific = self.slack_webhook_urls if channel == "slack" else self.teams_webhook_urls
        default = self.slack_webhook_url if channel == "slack" else self.teams_webhook_url
        suffix = normalise_target(target) if target else ""
        return specific.get(suffix) if suffix and suffix in specific else default

    def workflow_url(self, workflow_id: str | None) -> str | None:
        if not workflow_id:
            return None
        return (
            f"{self.ui_url.rstrip('/')}/namespaces/{quote(self.namespace, safe='')}"
            f"/workflows/{quote(workflow_id, safe='')}"
        )

    def secrets(self) -> list[str]:
        found = [self.webhook_secret, self.slack_webhook_url, self.teams_webhook_url,
                 self.smtp_password, self.jira_api_token]
        found += [*self.slack_webhook_urls.values(), *self.teams_webhook_urls.values()]
        return [s.get_secret_value() for s in found if s is not None and s.get_secret_value()]

    def redact(self, text: str) -> str:
        """``text`` without any configured secret (nor the path of a secret webhook URL)."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, "[redacted]")
            path = re.sub(r"^[a-z][a-z0-9+.-]*://[^/]*", "", secret)
            if len(path) >= 8 and path != secret:
                text = text.replace(path, "[redacted]")
        return text


# -- the activity -------------------------------------------------------------

_INSERT = """
INSERT INTO notifications (idempotency_key, escalation_id, ticket_id, seq, audience, recipient,
                           channel, target, template, context)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::jsonb)
ON CONFLICT (idempotency_key) DO NOTHING"""

_CLAIM = """
UPDATE notifications
   SET status = 'sending', attempts = attempts + 1,
       claimed_until = now() + make_interval(secs => $2), updated_at = now()
 WHERE idempotency_key = $1
   AND (status = 'pending' OR (status = 'sending' AND claimed_until < now()))
RETURNING attempts"""

_STATE = """
SELECT status, last_error, provider_response_id,
       GREATEST(EXTRACT(EPOCH FROM claimed_until - now()), 0)::float8 AS lease_left
  FROM notifications WHERE idempotency_key = $1"""

# The claim's attempt number fences the update: an attempt whose lease expired
# and was taken over must not overwrite the newer attempt's result.
_MARK_SENT = """
UPDATE notifications
   SET status = 'sent', sent_at = now(), provider_response_id = $3, last_error = NULL,
       claimed_until = NULL, updated_at = now()
 WHERE idempotency_key = $1 AND status = 'sending' AND attempts = $2"""

_MARK = """
UPDATE notifications
   SET status = $3, last_error = $4, claimed_until = NULL, updated_at = now()
 WHERE idempotency_key = $1 AND status = 'sending' AND attempts = $2"""

_JIRA_KEY = "SELECT issue_key FROM jira_issues WHERE escalation_id = $1"


@dataclass(frozen=True)
class _Prepared:
    intent: NotificationIntent
    message: Rendered


@dataclass(frozen=True)
class _Result:
    kind: Literal["sent", "already_sent", "failed", "retry"]
    error: str | None = None
    retry_after: float | None = None


class NotificationActivities:
    def __init__(self, pool: asyncpg.Pool, settings: NotificationSettings, http: httpx.AsyncClient):
        self._pool = pool
        self._settings = settings
        self._http = http
        self._senders: dict[str, Sender] = build_senders(settings, http, pool)

    @activity.defn(name="deliver_notifications")
    async def deliver_notifications(self, batch: DeliveryBatch) -> DeliveryOutcome:
        prepared = self._prepare(batch)
        await self._ensure_rows(prepared)
        results: dict[str, _Result] = {}
        limit = asyncio.Semaphore(self._settings.max_parallel)

        async def serve(destination: list[_Prepared]) -> None:
            for index, item in enumerate(destination):
                async with limit:
                    result = await self._deliver(item)
                results[item.intent.key] = result
                if result.kind == "retry":
                    for later in destination[index + 1 :]:
                        results[later.intent.key] = _Result(
                            "retry", f"waits for {item.intent.key} (same destination, kept in order)"
                        )
                    return

        outcomes = await asyncio.gather(
            *(serve(group) for group in _by_destination(prepared)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        async with self._pool.acquire() as conn:
            jira_key = await conn.fetchval(_JIRA_KEY, batch.escalation_id)

        delivered = DeliveryOutcome(jira_key=jira_key)
        pending: list[tuple[str, _Result]] = []
        for item in prepared:
            key, result = item.intent.key, results[item.intent.key]
            if result.kind == "sent":
                delivered.sent.append(key)
            elif result.kind == "already_sent":
                delivered.already_sent.append(key)
            elif result.kind == "failed":
                delivered.failed.append(
                    DeliveryFailure(
                        key=key,
                        recipient=item.intent.recipient,
                        channel=item.intent.channel,
                        error=result.error or "failed",
                        permanent=True,
                    )
                )
            else:
                pending.append((key, result))
        if pending:
            raise self._retry_error(pending, delivered)
        return delivered

    # -- steps ----------------------------------------------------------------

    def _prepare(self, batch: DeliveryBatch) -> list[_Prepared]:
        """Render everything before any I/O: a malformed intent is a bug and fails the batch."""
        prepared: list[_Prepared] = []
        seen: set[str] = set()
        for intent in batch.intents:
            if intent.escalation_id != batch.escalation_id:
                raise ApplicationError(
                    f"intent {intent.key} belongs to escalation {intent.escalation_id}, not to the "
                    f"batch's {batch.escalation_id}",
                    type="InvalidNotification",
                    non_retryable=True,
                )
            if intent.key in seen:
                continue
            seen.add(intent.key)
            try:
                escalation = intent.context.get("escalation")
                workflow_id = escalation.get("workflow_id") if isinstance(escalation, Mapping) else None
                message = render(
                    intent.template,
                    intent.context,
                    intent.audience,
                    workflow_url=self._settings.workflow_url(workflow_id),
                )
            except ValueError as exc:
                raise ApplicationError(
                    f"cannot render notification {intent.key}: {exc}",
                    type="InvalidNotification",
                    non_retryable=True,
                ) from exc
            prepared.append(_Prepared(intent, message))
        return prepared

    async def _ensure_rows(self, prepared: list[_Prepared]) -> None:
        rows = [
            (
                i.key, i.escalation_id, i.ticket_id, i.seq, i.audience, i.recipient, i.channel,
                i.target, i.template, json.dumps(i.context, default=str),
            )
            for i in (p.intent for p in prepared)
        ]
        if not rows:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(_INSERT, rows)

    async def _deliver(self, item: _Prepared) -> _Result:
        intent = item.intent
        async with self._pool.acquire() as conn:
            attempt = await conn.fetchval(_CLAIM, intent.key, self._settings.lease_seconds)
            if attempt is None:
                state = await conn.fetchrow(_STATE, intent.key)
        if attempt is None:
            return self._unclaimed(intent, state)

        sender = self._senders[intent.channel]
        try:
            async with asyncio.timeout(self._settings.lease_seconds / 2):
                result = await sender.send(Delivery(intent, item.message))
        except RetryableDeliveryError as exc:
            error = self._settings.redact(str(exc))
            await self._mark(intent.key, attempt, "pending", error)
            log.warning("notification %s will be retried: %s", intent.key, error)
            return _Result("retry", error, exc.retry_after)
        except PermanentDeliveryError as exc:
            error = self._settings.redact(str(exc))
            await self._mark(intent.key, attempt, "failed", error)
            log.error("notification %s failed permanently: %s", intent.key, error)
            return _Result("failed", error)
        except TimeoutError:
            error = f"{intent.channel}: the send took longer than {self._settings.lease_seconds / 2:g}s"
            await self._mark(intent.key, attempt, "pending", error)
            log.warning("notification %s will be retried: %s", intent.key, error)
            return _Result("retry", error)
        except Exception as exc:
            await self._mark(
                intent.key, attempt, "pending",
                self._settings.redact(f"unexpected {type(exc).__name__}: {exc}"),
            )
            raise

        async with self._pool.acquire() as conn:
            updated = await conn.execute(_MARK_SENT, intent.key, attempt, result.provider_response_id)
        if updated.endswith(" 0"):
            log.warning(
                "notification %s was sent, but its claim had expired and was taken over; the "
                "receiver may see it twice under the same key", intent.key,
            )
        log.info(
            "notification %s sent via %s to %s (%s)",
            intent.key, intent.channel, intent.recipient, result.provider_response_id,
        )
        return _Result("sent")

    def _unclaimed(self, intent: NotificationIntent, state: asyncpg.Record | None) -> _Result:
        if state is None:
            raise ApplicationError(
                f"notification {intent.key} has no row after it was stored",
                type="NotificationLedger",
            )
        status = state["status"]
        if status == "sent":
            return _Result("already_sent")
        if status == "failed":
            return _Result("failed", state["last_error"] or "failed")
        left = float(state["lease_left"] or 0.0)
        return _Result(
            "retry",
            f"being delivered by a concurrent attempt (claim ends in {left:.0f}s)",
            retry_after=left + 1.0,
        )

    async def _mark(self, key: str, attempt: int, status: str, error: str) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(_MARK, key, attempt, status, error)

    def _retry_error(
        self, pending: list[tuple[str, _Result]], delivered: DeliveryOutcome
    ) -> ApplicationError:
        hints = [r.retry_after for _, r in pending if r.retry_after is not None]
        delay = (
            timedelta(seconds=min(max(hints), self._settings.max_retry_delay)) if hints else None
        )
        first_key, first = pending[0]
        return ApplicationError(
            f"{len(pending)} notification(s) to retry, e.g. {first_key}: {first.error}",
            {
                "retry": [{"key": key, "error": r.error} for key, r in pending],
                "sent": delivered.sent,
                "already_sent": delivered.already_sent,
                "failed": [f.model_dump() for f in delivered.failed],
            },
            type="DeliveryRetryable",
            next_retry_delay=delay,
        )


def _by_destination(prepared: list[_Prepared]) -> list[list[_Prepared]]:
    """Intents grouped by where they go, in batch order; all Jira intents share one issue."""
    groups: dict[tuple[str, str], list[_Prepared]] = {}
    for item in prepared:
        intent = item.intent
        place = "" if intent.channel == "jira" else (intent.target or f"<{intent.recipient}>")
        groups.setdefault((intent.channel, place), []).append(item)
    return list(groups.values())

