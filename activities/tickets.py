"""Tickets: storing them (API, CLI import) and the criteria sweep's activities.

Storing is an upsert keyed by ticket id and ordered by ``updated_at``: the same version again
changes nothing, an older version never overwrites a newer one.

The sweep escalates a ticket at most once per episode. The rules, in SQL (``ELIGIBLE`` in
``escalations/db/sweep.py``, which holds every statement of the sweep):

- an *open escalation* is a read-model row of the ticket (table ``escalations``, folded from
  the workflow's events) whose status is not ``closed``, ``failed`` or ``terminated`` (a run that ended without closing
  ends the episode like a close; the reconciler of ended runs records it); or a sweep start recorded in
  ``ticket_escalations`` less than ``CLAIM_LEASE`` ago whose run the read model does not show
  yet (it folds the ``opened`` event a moment after the start); or a live claim (younger than
  ``CLAIM_LEASE``) of another sweep that is starting it. Temporal's id conflict is the final
  guard behind this cheap check;
- after an escalation closed, the ticket qualifies again only once it was updated after that
  close (``tickets.updated_at > escalations.closed_at``) and after the version the sweep last
  escalated (``> ticket_escalations.ticket_updated_at``); the new escalation is a *repeat*.
  A ticket version is never escalated twice by the sweep, even if its run failed to open.

Starting is guarded three times: a claim row per ticket version (primary key
``(ticket_id, ticket_updated_at)``, taken under a row lock on the ticket) written before the
start; Temporal's id conflict (``escalation-<ticket_id>`` with conflict policy FAIL) as the
final guard; and a memo ``sweep_claim`` on the started run, so a retried activity recognises
its own earlier start instead of starting again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from pydantic import ValidationError
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from escalations.client import EscalationAlreadyOpen, start_escalation
from escalations.db import sweep

from schemas import keys
from schemas.escalation import workflow_id_for
from schemas.ticket import (
    DONE_STATUSES,
    CandidatePage,
    CandidateQuery,
    EscalateBatch,
    EscalateResult,
    SkipReason,
    SweepMatch,
    Ticket,
    TicketOutcome,
    claim_key,
    escalation_request_for,
)

# A claim whose sweep did not start the escalation within this time may be taken over.
CLAIM_LEASE = timedelta(minutes=15)
MEMO_CLAIM = "sweep_claim"


# -- the sweep --------------------------------------------------------------


@dataclass
class _Claim:
    ticket: Ticket
    repeat: bool
    resumed: bool  # the claim existed already (a retry, or a takeover of an expired claim)


class TicketActivities:
    """The criteria sweep's activities: candidate tickets, and starting their escalations."""

    def __init__(
        self, pool: asyncpg.Pool, client: Client, *, task_queue: str, claim_lease: timedelta = CLAIM_LEASE
    ):
        self._pool = pool
        self._client = client
        self._task_queue = task_queue
        self._lease = claim_lease

    @activity.defn(name=keys.FIND_CANDIDATES)
    async def find_sweep_candidates(self, query: CandidateQuery) -> CandidatePage:
        """One page of open tickets without an open escalation, in id order after ``after_id``
        (only ``ticket_ids`` when the query lists some)."""
        return CandidatePage(tickets=await sweep.find_candidates(
            self._pool, self._lease, query.after_id, query.limit, query.ticket_ids))

    @activity.defn(name=keys.ESCALATE_TICKETS)
    async def escalate_tickets(self, batch: EscalateBatch) -> EscalateResult:
        """Claim each matched ticket version and start its escalation; safe to retry."""
        outcomes = []
        for match in batch.matches:
            outcomes.append(await self._escalate(batch, match))
            activity.heartbeat(match.ticket_id)
        return EscalateResult(outcomes=outcomes)

    async def _escalate(self, batch: EscalateBatch, match: SweepMatch) -> TicketOutcome:
        workflow_id = workflow_id_for(match.ticket_id)
        claim = await self._claim(batch.sweep_id, match)
        if isinstance(claim, TicketOutcome):
            return claim
        key = claim_key(match.ticket_id, match.ticket_updated_at)
        if claim.resumed:
            run_id = await self._started_with(workflow_id, key)
            if run_id is not None:
                await self._record_start(match, run_id)
                return TicketOutcome(ticket_id=match.ticket_id, started=True, workflow_id=workflow_id,
                                     run_id=run_id, repeat=claim.repeat)
        try:
            request = escalation_request_for(claim.ticket, match, policy=batch.policy)
        except ValidationError as exc:
            await self._release(batch.sweep_id, match)
            return TicketOutcome(ticket_id=match.ticket_id, started=False, workflow_id=workflow_id,
                                 skipped="invalid", message=str(exc)[:500])
        try:
            handle = await start_escalation(self._client, request, task_queue=self._task_queue, source=None,
                                            memo={MEMO_CLAIM: key, "sweep": batch.sweep_id})
        except EscalationAlreadyOpen:
            # The read model lags behind Temporal: an escalation is running after all.
            await self._release(batch.sweep_id, match)
            return TicketOutcome(
                ticket_id=match.ticket_id, started=False, workflow_id=workflow_id,
                skipped="already_running", message=f"{workflow_id} is already running",
            )
        run_id = handle.first_execution_run_id or handle.result_run_id
        assert run_id is not None
        await self._record_start(match, run_id)
        activity.logger.info("sweep started %s (%s)", workflow_id, match.detail)
        return TicketOutcome(ticket_id=match.ticket_id, started=True, workflow_id=workflow_id,
                             run_id=run_id, repeat=claim.repeat)

    async def _claim(self, sweep_id: str, match: SweepMatch) -> _Claim | TicketOutcome:
        def skip(reason: SkipReason, message: str | None = None) -> TicketOutcome:
            return TicketOutcome(ticket_id=match.ticket_id, started=False,
                                 workflow_id=workflow_id_for(match.ticket_id), skipped=reason, message=message)

        async with self._pool.acquire() as conn, conn.transaction():
            row = await sweep.lock_ticket(conn, match.ticket_id)
            if row is None:
                return skip("gone")
            if row["updated_at"] != match.ticket_updated_at:
                return skip("changed", f"updated at {row['updated_at'].isoformat()} since the candidate query")
            if row["status"] in DONE_STATUSES:
                return skip("closed", f"status {row['status']}")
            try:
                ticket = Ticket.model_validate(row["document"])
            except ValidationError as exc:
                return skip("invalid", str(exc)[:500])
            claim = await sweep.claim_of(conn, match.ticket_id, match.ticket_updated_at, self._lease)
            if claim is not None:
                if claim["run_id"] is not None:
                    if claim["sweep_id"] == sweep_id:  # this sweep started it; the activity is retried
                        return TicketOutcome(ticket_id=match.ticket_id, started=True,
                                             workflow_id=workflow_id_for(match.ticket_id),
                                             run_id=claim["run_id"], repeat=claim["repeat"])
                    return skip("escalated", "this ticket version was escalated by another sweep")
                if claim["sweep_id"] != sweep_id:
                    if claim["live"]:
                        return skip("claimed", f"being started by sweep {claim['sweep_id']}")
                    await sweep.take_over_claim(conn, match.ticket_id, match.ticket_updated_at, sweep_id,
                                                match.rule, match.detail)
                return _Claim(ticket=ticket, repeat=claim["repeat"], resumed=True)
            eligible = await sweep.still_eligible(conn, self._lease, match.ticket_id)
            if not eligible:
                return skip("open_escalation", "an escalation of this ticket is open (or closed after its last update)")
            # Eligible means no open escalation: any escalation the ticket had is closed.
            repeat = await sweep.escalated_before(conn, match.ticket_id)
            await sweep.insert_claim(conn, match.ticket_id, match.ticket_updated_at, workflow_id_for(match.ticket_id),
                                     match.rule, match.detail, repeat, sweep_id)
        return _Claim(ticket=ticket, repeat=repeat, resumed=False)

    async def _started_with(self, workflow_id: str, key: str) -> str | None:
        """The escalation id of the run started for this claim earlier, if there is one."""
        try:
            description = await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        memo = await description.memo()
        if memo.get(MEMO_CLAIM) != key:
            return None
        return description.raw_description.workflow_execution_info.first_run_id or description.run_id

    async def _record_start(self, match: SweepMatch, run_id: str) -> None:
        await sweep.record_start(self._pool, match.ticket_id, match.ticket_updated_at, run_id)

    async def _release(self, sweep_id: str, match: SweepMatch) -> None:
        await sweep.release_claim(self._pool, match.ticket_id, match.ticket_updated_at, sweep_id)
