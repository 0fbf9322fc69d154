"""Tickets: storing them (API, CLI import) and the criteria sweep's activities.

Storing is an upsert keyed by ticket id and ordered by ``updated_at``: the same version again
changes nothing, an older version never overwrites a newer one.

The sweep escalates a ticket at most once per episode. The rules, in SQL (``ELIGIBLE``):

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

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from pydantic import ValidationError
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from schemas import keys
from schemas.escalation import start_options, workflow_id_for
from schemas.ticket import (
    DONE_STATUSES,
    ESCALATE_TICKETS,
    FIND_CANDIDATES,
    CandidatePage,
    CandidateQuery,
    EscalateBatch,
    EscalateResult,
    SkipReason,
    SweepMatch,
    Ticket,
    TicketFacts,
    TicketOutcome,
    TicketUpsertResult,
    claim_key,
    escalation_request_for,
    slugify,
)

# A claim whose sweep did not start the escalation within this time may be taken over.
CLAIM_LEASE = timedelta(minutes=15)
MEMO_CLAIM = "sweep_claim"

_DONE = ", ".join(f"'{s}'" for s in DONE_STATUSES)

# ``t`` is the ticket row; $1 is the claim lease. Shared by the candidate query and the re-check.
ELIGIBLE = """
    NOT EXISTS (
        SELECT 1 FROM escalations e
         WHERE e.ticket_id = t.id
           AND (e.status NOT IN ('closed', 'failed', 'terminated') OR e.closed_at IS NULL
                OR e.closed_at >= t.updated_at))
    AND NOT EXISTS (
        SELECT 1 FROM ticket_escalations l
         WHERE l.ticket_id = t.id
           AND CASE WHEN l.run_id IS NULL THEN l.claimed_at > now() - $1::interval
                    ELSE l.ticket_updated_at >= t.updated_at
                         OR (l.escalated_at > now() - $1::interval
                             AND NOT EXISTS (SELECT 1 FROM escalations c WHERE c.escalation_id = l.run_id))
               END)
"""

# $2: the keyset cursor (last id of the previous page); $3: the page size; $4: only these ids
# (the demo's own sweep), or NULL for every ticket (the schedule). Served by ``tickets_sweep``.
CANDIDATES = f"""
SELECT t.id, t.updated_at, t.status, t.opened_at, t.category, t.priority, t.users_affected,
       t.interactions, t.resolution_due, t.customer_segment
  FROM tickets t
 WHERE t.status NOT IN ({_DONE})
   AND t.id > $2
   AND ($4::text[] IS NULL OR t.id = ANY($4::text[]))
   AND {ELIGIBLE}
 ORDER BY t.id
 LIMIT $3
"""


# -- storing tickets --------------------------------------------------------


async def upsert_ticket(conn: asyncpg.Connection, ticket: Ticket, *, source: str) -> TicketUpsertResult:
    """Insert or update one ticket; never overwrite a newer version with an older one."""
    document = ticket.model_dump(mode="json")
    inserted = await conn.fetchval(
        """INSERT INTO tickets AS t
               (id, customer_id, customer_segment, subject, category, priority, status,
                users_affected, interactions, opened_at, updated_at, resolution_due, document, source)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT (id) DO UPDATE SET
               customer_id = EXCLUDED.customer_id, customer_segment = EXCLUDED.customer_segment,
               subject = EXCLUDED.subject, category = EXCLUDED.category,
               priority = EXCLUDED.priority, status = EXCLUDED.status,
               users_affected = EXCLUDED.users_affected, interactions = EXCLUDED.interactions,
               opened_at = EXCLUDED.opened_at, updated_at = EXCLUDED.updated_at,
               resolution_due = EXCLUDED.resolution_due, document = EXCLUDED.document,
               source = EXCLUDED.source, stored_at = now()
            WHERE t.updated_at < EXCLUDED.updated_at
           RETURNING (xmax = 0)""",
        ticket.id, ticket.customer.id, ticket.customer.segment, ticket.subject,
        slugify(ticket.category), ticket.priority, ticket.status, ticket.users_affected,
        ticket.interactions, ticket.opened_at, ticket.updated_at, ticket.resolution_due,
        document, source,
    )
    if inserted is not None:
        return TicketUpsertResult(
            ticket_id=ticket.id, outcome="inserted" if inserted else "updated", updated_at=ticket.updated_at
        )
    stored = await conn.fetchrow(
        "SELECT updated_at, document = $2::jsonb AS same FROM tickets WHERE id = $1", ticket.id, document
    )
    if stored["updated_at"] == ticket.updated_at:
        note = None if stored["same"] else (
            "a different version with this updated_at is already stored; nothing changed "
            "(send a later updated_at to change the ticket)"
        )
        return TicketUpsertResult(ticket_id=ticket.id, outcome="unchanged", updated_at=ticket.updated_at, note=note)
    return TicketUpsertResult(
        ticket_id=ticket.id, outcome="stale", updated_at=stored["updated_at"],
        note=f"a newer version (updated_at {stored['updated_at'].isoformat()}) is stored; nothing changed",
    )


async def upsert_tickets(pool: asyncpg.Pool, tickets: Iterable[Ticket], *, source: str) -> list[TicketUpsertResult]:
    """Store several tickets in order, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        return [await upsert_ticket(conn, ticket, source=source) for ticket in tickets]


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

    @activity.defn(name=FIND_CANDIDATES)
    async def find_sweep_candidates(self, query: CandidateQuery) -> CandidatePage:
        """One page of open tickets without an open escalation, in id order after ``after_id``
        (only ``ticket_ids`` when the query lists some)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(CANDIDATES, self._lease, query.after_id, query.limit, query.ticket_ids)
        return CandidatePage(tickets=[
            TicketFacts(
                id=r["id"], updated_at=r["updated_at"], status=r["status"], opened_at=r["opened_at"],
                category=r["category"], priority=r["priority"], users_affected=r["users_affected"],
                interactions=r["interactions"], resolution_due=r["resolution_due"],
                segment=r["customer_segment"],
            )
            for r in rows
        ])

    @activity.defn(name=ESCALATE_TICKETS)
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
            handle = await self._client.start_workflow(
                keys.ESCALATION_WORKFLOW,
                request,
                task_queue=self._task_queue,
                memo={MEMO_CLAIM: key, "sweep": batch.sweep_id},
                **start_options(request),
            )
        except WorkflowAlreadyStartedError:
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
            row = await conn.fetchrow(
                "SELECT document, updated_at, status FROM tickets WHERE id = $1 FOR UPDATE", match.ticket_id
            )
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
            claim = await conn.fetchrow(
                """SELECT sweep_id, run_id, repeat, claimed_at > now() - $3::interval AS live
                     FROM ticket_escalations WHERE ticket_id = $1 AND ticket_updated_at = $2""",
                match.ticket_id, match.ticket_updated_at, self._lease,
            )
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
                    await conn.execute(
                        """UPDATE ticket_escalations SET sweep_id = $3, claimed_at = now(), rule = $4, detail = $5
                            WHERE ticket_id = $1 AND ticket_updated_at = $2""",
                        match.ticket_id, match.ticket_updated_at, sweep_id, match.rule, match.detail,
                    )
                return _Claim(ticket=ticket, repeat=claim["repeat"], resumed=True)
            eligible = await conn.fetchval(
                f"SELECT ({ELIGIBLE}) FROM tickets t WHERE t.id = $2", self._lease, match.ticket_id
            )
            if not eligible:
                return skip("open_escalation", "an escalation of this ticket is open (or closed after its last update)")
            # Eligible means no open escalation: any escalation the ticket had is closed.
            repeat = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM escalations WHERE ticket_id = $1)", match.ticket_id
            )
            await conn.execute(
                """INSERT INTO ticket_escalations
                       (ticket_id, ticket_updated_at, workflow_id, rule, detail, repeat, sweep_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)""",
                match.ticket_id, match.ticket_updated_at, workflow_id_for(match.ticket_id),
                match.rule, match.detail, repeat, sweep_id,
            )
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
        await self._pool.execute(
            """UPDATE ticket_escalations SET run_id = $3, escalated_at = now()
                WHERE ticket_id = $1 AND ticket_updated_at = $2""",
            match.ticket_id, match.ticket_updated_at, run_id,
        )

    async def _release(self, sweep_id: str, match: SweepMatch) -> None:
        await self._pool.execute(
            """DELETE FROM ticket_escalations
                WHERE ticket_id = $1 AND ticket_updated_at = $2 AND sweep_id = $3 AND run_id IS NULL""",
            match.ticket_id, match.ticket_updated_at, sweep_id,
        )
