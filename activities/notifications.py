"""Delivery of notification intents: at least once on the wire, exactly once in the ledger.

``send_notifications`` (the current path) sends one round of a batch and reports what
became of each intent; it never waits on PostgreSQL. The workflow records the results in
history and the projection writes them to the ``notifications`` ledger, so a page goes
out on time while PostgreSQL is down, and its ledger row catches up afterwards.

* Every request carries the intent's idempotency key (``Idempotency-Key`` header for
  webhooks, Slack, Teams and Jira; ``Message-ID`` for e-mail): a resend is recognisable.
* The activity heartbeats every second with the keys already sent. A worker that dies
  mid-round is noticed within the heartbeat timeout (seconds) and the next attempt skips
  what the last heartbeat says was sent; what it cannot know it sends again under the
  same key. Keys the ledger already shows as sent (a run repaired by a reset re-decides
  them) are skipped when PostgreSQL answers within ``LEDGER_CHECK_TIMEOUT``.
* Retryable failures (5xx, 429, 408, time-outs, connection errors, SMTP 4xx) come back in
  ``retry``: the workflow sends them again in a later round after a durable back-off.
  Permanent ones (other 4xx, missing credentials, a message that cannot be rendered) come
  back in ``failed``, per intent. Every message is rendered and put into its channel's format
  before anything is sent; whatever goes wrong there fails that intent alone, never the round.
  Messages to one destination (channel + target) keep their order: after a retryable failure
  the rest of that destination waits for the next round. Different destinations are served
  concurrently.

``deliver_notifications`` serves runs of the released commit path: it claims each ledger
row with a lease before sending and records the result itself, and raises
``DeliveryRetryable`` so Temporal retries the activity.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
import httpx
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.channels import (
    Delivery,
    PermanentDeliveryError,
    RetryableDeliveryError,
    Sender,
    UnrenderableError,
)
from activities.channels.email import EmailSender
from activities.channels.jira import JiraSender
from activities.channels.log import LogSender
from activities.channels.slack import SlackSender
from activities.channels.teams import TeamsSender
from activities.channels.webhook import WebhookSender
from activities.templates import Action, Rendered, render
from escalations.db import jira as jira_issues
from escalations.db import ledger
from escalations.links import ActionSigner, ActionToken, action_url
from escalations.observability.metrics import NOTIFICATIONS
from escalations.settings import NotificationSettings
from schemas.actions import ACTION_LABELS
from schemas.notifications import (
    DeliveryBatch,
    DeliveryFailure,
    DeliveryOutcome,
    NotificationIntent,
    SendOutcome,
    Sent,
    ToRetry,
)

log = logging.getLogger(__name__)

# -- the activity -------------------------------------------------------------

# Keys the ledger already shows as sent are skipped, if PostgreSQL answers this fast; after it
# did not, pages go out unchecked for a while instead of each paying the wait.
LEDGER_CHECK_TIMEOUT = 0.25
LEDGER_CHECK_PAUSE = 30.0
HEARTBEAT_EVERY = 1.0


@dataclass(frozen=True)
class _Prepared:
    intent: NotificationIntent
    message: Rendered
    delivery: Delivery | None = None  # in its channel's format (send_notifications)


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
        self._ledger_unchecked_until = 0.0
        self._signer = ActionSigner(settings.action_keys) if settings.action_links else None

    @activity.defn(name="send_notifications")
    async def send_notifications(self, batch: DeliveryBatch) -> SendOutcome:
        """One delivery round of ``batch``; never waits on PostgreSQL."""
        outcome = SendOutcome()
        done: dict[str, Sent] = {}
        for detail in activity.info().heartbeat_details:
            for sent in _Progress.model_validate(detail).sent:
                done[sent.key] = sent
        progress = _Progress(sent=list(done.values()))
        keep_alive = asyncio.create_task(_heartbeat_forever(progress))
        try:
            return await self._send_round(batch, outcome, done, progress)
        finally:
            keep_alive.cancel()

    async def _send_round(self, batch: DeliveryBatch, outcome: SendOutcome, done: dict[str, Sent],
                          progress: _Progress) -> SendOutcome:
        prepared: list[_Prepared] = []
        for intent in _unique(batch):
            if intent.key in done:
                continue
            try:
                prepared.append(self._prepare_one(_with_handoff(intent, batch.handoff)))
            except PermanentDeliveryError as exc:
                error = self._settings.redact(str(exc))
                log.error("notification %s failed permanently: %s", intent.key, error)
                NOTIFICATIONS.labels(channel=intent.channel, outcome="failed").inc()
                outcome.failed.append(DeliveryFailure(
                    key=intent.key, recipient=intent.recipient, channel=intent.channel,
                    error=error[:500], permanent=True))
        channels = {p.intent.key: p.intent.channel for p in prepared}
        for key in await self._ledger_sent([p.intent.key for p in prepared]):
            NOTIFICATIONS.labels(channel=channels[key], outcome="already_sent").inc()
            sent = Sent(key=key, at=datetime.now(UTC))
            done[key] = sent
            progress.sent.append(sent)
        prepared = [p for p in prepared if p.intent.key not in done]
        limit = asyncio.Semaphore(self._settings.max_parallel)

        async def serve(destination: list[_Prepared]) -> None:
            for index, item in enumerate(destination):
                async with limit:
                    result = await self._send_once(item)
                if isinstance(result, Sent):
                    progress.sent.append(result)
                    activity.heartbeat(progress.model_dump(mode="json"))
                    if result.jira_key:
                        outcome.jira_key = result.jira_key
                    continue
                if isinstance(result, DeliveryFailure):
                    outcome.failed.append(result)
                    continue
                outcome.retry.append(result)
                for later in destination[index + 1:]:
                    outcome.retry.append(ToRetry(
                        key=later.intent.key,
                        error=f"waits for {item.intent.key} (same destination, kept in order)"))
                return

        async with asyncio.TaskGroup() as group:
            for destination in _by_destination(prepared):
                group.create_task(serve(destination))
        outcome.sent = [Sent(key=s.key, provider_response_id=s.provider_response_id, at=s.at) for s in progress.sent]
        return outcome

    def _prepare_one(self, intent: NotificationIntent) -> _Prepared:
        """The intent's message in its channel's format; ``PermanentDeliveryError`` if it cannot be."""
        try:
            message = self._render(intent)
        except Exception as exc:
            log.exception("cannot render notification %s (%s)", intent.key, intent.template)
            detail = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            raise UnrenderableError(f"cannot render {intent.template}: {detail}") from exc
        delivery = self._senders[intent.channel].prepare(Delivery(intent, message))
        return _Prepared(intent, message, delivery)

    def _render(self, intent: NotificationIntent) -> Rendered:
        escalation = intent.context.get("escalation")
        workflow_id = escalation.get("workflow_id") if isinstance(escalation, Mapping) else None
        return render(intent.template, intent.context, intent.audience,
                      workflow_url=self._settings.workflow_url(workflow_id), actions=self._actions(intent))

    def _actions(self, intent: NotificationIntent) -> tuple[Action, ...]:
        """The page's signed action links, as its grant says (none without ESCALATION_ACTION_KEY
        and ESCALATION_PUBLIC_URL). Made here, not in the workflow: keys stay out of history,
        and the same intent always gives the same links (a resent page is the same page)."""
        grant = intent.actions
        if grant is None or self._signer is None or intent.audience == "customer":
            return ()
        assert self._settings.public_url is not None
        actions = []
        for name in grant.actions:
            token = self._signer.sign(ActionToken(
                escalation_id=intent.escalation_id, ticket_id=intent.ticket_id, level=grant.level,
                recipient=intent.recipient, action=name, channel=intent.channel, seq=intent.seq,
                expires_at=grant.expires_at))
            actions.append(Action(name, ACTION_LABELS[name], action_url(self._settings.public_url, name, token), token))
        return tuple(actions)

    async def _ledger_sent(self, keys: list[str]) -> list[str]:
        """Keys the ledger shows as sent; none when PostgreSQL does not answer at once."""
        if not keys or time.monotonic() < self._ledger_unchecked_until:
            return []
        try:
            async with asyncio.timeout(LEDGER_CHECK_TIMEOUT):
                return await ledger.sent_keys(self._pool, keys)
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            self._ledger_unchecked_until = time.monotonic() + LEDGER_CHECK_PAUSE
            log.warning("ledger not checked before sending (PostgreSQL: %s); for %gs pages go out unchecked "
                        "and receivers deduplicate by idempotency key", type(exc).__name__, LEDGER_CHECK_PAUSE)
            return []

    async def _send_once(self, item: _Prepared) -> _SentWithJira | DeliveryFailure | ToRetry:
        result = await self._send_unmeasured(item)
        outcome = "sent" if isinstance(result, Sent) else "failed" if isinstance(result, DeliveryFailure) else "retry"
        NOTIFICATIONS.labels(channel=item.intent.channel, outcome=outcome).inc()
        return result

    async def _send_unmeasured(self, item: _Prepared) -> _SentWithJira | DeliveryFailure | ToRetry:
        intent = item.intent
        sender = self._senders[intent.channel]
        try:
            async with asyncio.timeout(self._settings.request_timeout * 2):
                result = await sender.send(item.delivery or Delivery(intent, item.message))
        except RetryableDeliveryError as exc:
            error = self._settings.redact(str(exc))
            log.warning("notification %s will be retried: %s", intent.key, error)
            return ToRetry(key=intent.key, error=error[:500], retry_after=exc.retry_after)
        except PermanentDeliveryError as exc:
            error = self._settings.redact(str(exc))
            log.error("notification %s failed permanently: %s", intent.key, error)
            return DeliveryFailure(key=intent.key, recipient=intent.recipient, channel=intent.channel,
                                   error=error[:500], permanent=True)
        except TimeoutError:
            error = f"{intent.channel}: the send took longer than {self._settings.request_timeout * 2:g}s"
            log.warning("notification %s will be retried: %s", intent.key, error)
            return ToRetry(key=intent.key, error=error)
        log.info("notification %s sent via %s to %s (%s)", intent.key, intent.channel, intent.recipient,
                 result.provider_response_id)
        return _SentWithJira(key=intent.key, provider_response_id=result.provider_response_id,
                             at=datetime.now(UTC), jira_key=result.jira_key)

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
                NOTIFICATIONS.labels(channel=item.intent.channel, outcome=result.kind).inc()
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
            jira_key = await jira_issues.issue_key(conn, batch.escalation_id)

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
                message = self._render(intent)
            except ValueError as exc:
                raise ApplicationError(
                    f"cannot render notification {intent.key}: {exc}",
                    type="InvalidNotification",
                    non_retryable=True,
                ) from exc
            prepared.append(_Prepared(intent, message))
        return prepared

    async def _ensure_rows(self, prepared: list[_Prepared]) -> None:
        await ledger.insert_pending(self._pool, [p.intent for p in prepared])

    async def _deliver(self, item: _Prepared) -> _Result:
        intent = item.intent
        attempt, state = await ledger.claim(self._pool, intent.key, self._settings.lease_seconds)
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

        if not await ledger.mark_sent(self._pool, intent.key, attempt, result.provider_response_id):
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
        await ledger.mark_attempt(self._pool, key, attempt, status, error)

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


class _SentWithJira(Sent):
    jira_key: str | None = None


class _Progress(BaseModel):
    """Heartbeat details: what this round has sent so far (read back by the next attempt)."""

    sent: list[Sent] = Field(default_factory=list)


async def _heartbeat_forever(progress: _Progress) -> None:
    """Heartbeat while sends are in flight, so a slow receiver is not mistaken for a dead worker."""
    while True:
        # Sleep first: a round that ends within HEARTBEAT_EVERY (most do) needs no keep-alive, and
        # each heartbeat costs the worker an encode, an encryption and a call into the SDK core.
        # Progress is heartbeaten after every send anyway; an earlier attempt's stays on the server.
        await asyncio.sleep(HEARTBEAT_EVERY)
        activity.heartbeat(progress.model_dump(mode="json"))


def _unique(batch: DeliveryBatch) -> list[NotificationIntent]:
    seen: set[str] = set()
    unique = []
    for intent in batch.intents:
        if intent.escalation_id != batch.escalation_id:
            raise ApplicationError(
                f"intent {intent.key} belongs to escalation {intent.escalation_id}, not to the "
                f"batch's {batch.escalation_id}", type="InvalidNotification", non_retryable=True)
        if intent.key not in seen:
            seen.add(intent.key)
            unique.append(intent)
    return unique


def _with_handoff(intent: NotificationIntent, handoff: dict | None) -> NotificationIntent:
    """The intent's context with the batch's handoff (carried once per batch, not per intent)."""
    escalation = intent.context.get("escalation")
    if handoff is None or not isinstance(escalation, Mapping) or "handoff" in escalation:
        return intent
    context = {**intent.context, "escalation": {**escalation, "handoff": handoff}}
    return intent.model_copy(update={"context": context})


def build_senders(settings: NotificationSettings, http: httpx.AsyncClient, pool: asyncpg.Pool) -> dict[str, Sender]:
    """One sender per channel, each holding what it needs."""
    return {
        "log": LogSender(),
        "webhook": WebhookSender(settings, http),
        "slack": SlackSender(settings, http),
        "teams": TeamsSender(settings, http),
        "email": EmailSender(settings),
        "jira": JiraSender(settings, http, pool),
    }


def _by_destination(prepared: list[_Prepared]) -> list[list[_Prepared]]:
    """Intents grouped by where they go, in batch order; all Jira intents share one issue."""
    groups: dict[tuple[str, str], list[_Prepared]] = {}
    for item in prepared:
        intent = item.intent
        place = "" if intent.channel == "jira" else (intent.target or f"<{intent.recipient}>")
        groups.setdefault((intent.channel, place), []).append(item)
    return list(groups.values())

