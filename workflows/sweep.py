"""CriteriaSweepWorkflow: auto-escalate tickets that meet the policy's ``criteria`` rules.

Run by the Temporal Schedule ``escalation-criteria-sweep`` every ``criteria.sweep_every``
(overlap SKIP). One run:

1. loads the policy (activity ``load_policy``);
2. pages through candidate tickets (activity ``find_sweep_candidates``: open tickets with no
   open escalation whose current version was not escalated yet, keyset pages by id; only the
   input's ``ticket_ids`` when it lists some, as the demo's own sweep does; the schedule
   never sets it);
3. matches each against the rules here, with the run's ``workflow.now()`` as the instant
   (pure ``workflows.criteria``: the first matching rule wins);
4. hands the matches to ``escalate_tickets``, which claims each ticket version in Postgres
   and starts ``EscalationWorkflow`` ``escalation-<ticket_id>`` (Temporal's id conflict is the
   final guard against a second run while one is open).

The result (and the run's current details) report checked / matched / started / skipped.
Deterministic: no I/O and no wall clock here.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from schemas import keys
    from schemas.activities import PolicyRequest
    from schemas.policy import Policy
    from schemas.ticket import (
        CandidatePage,
        CandidateQuery,
        EscalateBatch,
        EscalateResult,
        SweepInput,
        SweepMatch,
        SweepResult,
        SweepSkipped,
        SweepStarted,
    )
    from workflows.criteria import first_match

RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_interval=timedelta(seconds=10))
ESCALATE_CHUNK = 25  # starts per escalate_tickets activity (each heartbeats per ticket)
PAGES_PER_RUN = 20  # continue-as-new after this many pages, keeping the cursor and totals


@workflow.defn(name=keys.SWEEP_WORKFLOW)
class CriteriaSweepWorkflow:
    def __init__(self) -> None:
        self._result: SweepResult | None = None

    @workflow.run
    async def run(self, input: SweepInput) -> SweepResult:
        policy = await workflow.execute_activity(
            keys.LOAD_POLICY,
            PolicyRequest(name=input.policy),
            result_type=Policy,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RETRY,
            summary=f"load policy {input.policy or 'default'}",
        )
        as_of = input.as_of or workflow.now()
        result = input.carried or SweepResult(policy=policy.name, policy_version=policy.version, as_of=as_of)
        if input.carried is None and input.ticket_ids is not None:
            result.note = f"restricted to {len(input.ticket_ids)} listed ticket(s): {_listed(input.ticket_ids)}"
        self._result = result
        rules = policy.criteria.rules if policy.criteria else []
        if not rules:
            result.note = f"policy {policy.name} v{policy.version} has no criteria rules: nothing to check"
            self._show()
            return result
        info = workflow.info()
        sweep_id = f"{info.workflow_id}/{info.first_execution_run_id}"
        cursor = input.after_id
        pages_here = 0
        only = "" if input.ticket_ids is None else f" among {_listed(input.ticket_ids)}"
        while True:
            page = await workflow.execute_activity(
                keys.FIND_CANDIDATES,
                CandidateQuery(after_id=cursor, limit=input.page_size, ticket_ids=input.ticket_ids),
                result_type=CandidatePage,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RETRY,
                summary=(f"candidate tickets after {cursor!r}" if cursor else "candidate tickets") + only,
            )
            result.pages += 1
            result.checked += len(page.tickets)
            matches: list[SweepMatch] = []
            for ticket in page.tickets:
                hit = first_match(rules, ticket, as_of)
                if hit is None:
                    continue
                result.matched += 1
                kind, priority = hit.rule.open_as.kind, hit.rule.open_as.priority
                # The escalation would fail to open (routing.entry_point): report, don't start.
                if kind == "functional" and ticket.category not in policy.routes:
                    known = ", ".join(sorted(policy.routes)) or "none"
                    result.add_skipped(SweepSkipped(
                        ticket_id=ticket.id, rule=hit.rule.name, reason="unroutable",
                        message=f"category {ticket.category!r} has no route (known: {known})",
                    ))
                    continue
                matches.append(SweepMatch(
                    ticket_id=ticket.id, ticket_updated_at=ticket.updated_at, rule=hit.rule.name,
                    detail=hit.detail, kind=kind, priority=priority,
                ))
            for start in range(0, len(matches), ESCALATE_CHUNK):
                chunk = matches[start:start + ESCALATE_CHUNK]
                await self._escalate(sweep_id, policy.name, chunk)
            self._show()
            if len(page.tickets) < input.page_size:
                break
            cursor = page.tickets[-1].id
            pages_here += 1
            if pages_here >= PAGES_PER_RUN or workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(SweepInput(
                    policy=input.policy, page_size=input.page_size, ticket_ids=input.ticket_ids,
                    after_id=cursor, as_of=as_of, carried=result,
                ))
        return result

    async def _escalate(self, sweep_id: str, policy: str, matches: list[SweepMatch]) -> None:
        assert self._result is not None
        names = _listed([m.ticket_id for m in matches])
        outcome = await workflow.execute_activity(
            keys.ESCALATE_TICKETS,
            EscalateBatch(sweep_id=sweep_id, policy=policy, matches=matches),
            result_type=EscalateResult,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RETRY,
            summary=f"escalate {len(matches)} ticket(s): {names}"[:200],
        )
        by_id = {m.ticket_id: m for m in matches}
        for item in outcome.outcomes:
            match = by_id[item.ticket_id]
            if item.started:
                self._result.add_started(SweepStarted(
                    ticket_id=item.ticket_id, workflow_id=item.workflow_id, rule=match.rule,
                    detail=match.detail, repeat=item.repeat,
                ))
            else:
                assert item.skipped is not None
                self._result.add_skipped(SweepSkipped(
                    ticket_id=item.ticket_id, rule=match.rule, reason=item.skipped, message=item.message,
                ))

    @workflow.query(name="progress")
    def progress(self) -> SweepResult | None:
        return self._result

    def _show(self) -> None:
        workflow.set_current_details(details_markdown(self._result) if self._result else "")


def _listed(ids: list[str]) -> str:
    """``a, b, c …``: the first three ids, for activity summaries."""
    return ", ".join(ids[:3]) + (" …" if len(ids) > 3 else "") if ids else "no tickets"


def details_markdown(result: SweepResult) -> str:
    """What an operator sees in Temporal UI: the counts and the tickets started or skipped."""
    reasons = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(result.skipped_by_reason.items()))
    lines = [
        f"**Criteria sweep** · policy `{result.policy}` v{result.policy_version} · "
        f"as of {result.as_of:%Y-%m-%d %H:%M:%S} UTC",
        f"**Checked** {result.checked} · **matched** {result.matched} · **started** {result.started}"
        + (f" ({result.repeats} repeat{'s' if result.repeats != 1 else ''})" if result.repeats else "")
        + f" · **skipped** {result.skipped}" + (f" ({reasons})" if reasons else ""),
    ]
    if result.note:
        lines.append(result.note)
    if result.started_tickets:
        lines.append("**Started**\n" + "\n".join(
            f"- `{s.ticket_id}` · {s.detail}" + (" · repeat" if s.repeat else "")
            for s in result.started_tickets[:20]
        ))
    if result.skipped_tickets:
        lines.append("**Skipped**\n" + "\n".join(
            f"- `{s.ticket_id}` · {s.rule} · {s.reason.replace('_', ' ')}" + (f": {s.message}" if s.message else "")
            for s in result.skipped_tickets[:20]
        ))
    return "\n\n".join(lines)[:20_000]
