"""``escalations erase-customer``: one customer's data leaves Temporal and PostgreSQL, nobody else's.

A customer with a closed escalation (resolved, postmortem done, CSAT recorded, ticket stored)
and one still running: the command refuses while it runs, plans without ``--yes``, then deletes
the runs (escalation and postmortem) and every row (read model, events, ledger, CSAT, ticket),
while another customer's escalation and rows stay.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from typer.testing import CliRunner

from escalations import client as ec
from escalations.db.csat import record_csat
from escalations.db.tickets import upsert_tickets
from schemas.escalation import CompletePostmortemCommand, ResolveCommand, postmortem_id_for
from schemas.reporting import CsatSubmission
from schemas.ticket import Ticket
from tests.helpers.codec import TEST_ENV
from tests.helpers.escalations import current_state, projected, start_escalation
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request

TABLES = ("escalations", "escalation_events", "notifications", "csat_responses")


async def rows_of(pool: asyncpg.Pool, escalation_ids: list[str]) -> dict[str, int]:
    return {table: await pool.fetchval(f"SELECT count(*) FROM {table} WHERE escalation_id = ANY($1::text[])",
                                       escalation_ids) for table in TABLES}


async def gone(client: Client, workflow_id: str) -> None:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        assert err.status == RPCStatusCode.NOT_FOUND
        return
    raise AssertionError(f"{workflow_id} is still there")


async def test_erase_customer_removes_one_customers_data_everywhere(
    client: Client, start_worker, pg_pool: asyncpg.Pool, database_url: str, task_queue: str, tmp_path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    customer = f"erase-{suffix}"
    person = {"id": customer, "name": "Initech", "email": "bill@initech.example"}
    closed = blog_request(f"ER-1-{suffix}", customer=person)
    running = blog_request(f"ER-2-{suffix}", customer=person)
    other = blog_request(f"KEEP-{suffix}", customer={"id": f"keep-{suffix}", "name": "Globex"})
    async with start_worker("fast"):
        handles = {r.ticket_id: await start_escalation(client, r, task_queue) for r in (closed, running, other)}
        for handle in handles.values():
            await projected(pg_pool, handle)
        await ec.resolve(client, closed.ticket_id, ResolveCommand(by="dana", root_cause="a schema change",
                                                                  mitigation="mapped the field"))
        await ec.complete_postmortem(client, closed.ticket_id, CompletePostmortemCommand(
            by="dana", summary="done", root_cause="a schema change", improvements=["alerts"]))

        async def closed_in_read_model() -> None:
            assert await pg_pool.fetchval("SELECT status FROM escalations WHERE ticket_id = $1",
                                          closed.ticket_id) == "closed"

        await eventually(closed_in_read_model, timeout=30)
        async with pg_pool.acquire() as conn:
            await record_csat(conn, closed.ticket_id, CsatSubmission(score=4, comment="Bill says thanks"),
                              datetime.now(UTC))
        now = datetime.now(UTC)
        await upsert_tickets(pg_pool, [Ticket.model_validate({
            "id": f"T-{suffix}", "customer": person, "subject": "Login broken", "status": "open",
            "opened_at": now, "updated_at": now})], source="api")
        ids = {r.ticket_id: (await current_state(handles[r.ticket_id])).escalation_id for r in (running, other)}
        ids[closed.ticket_id] = (await ec.final_state(client, closed.ticket_id)).escalation_id
        mine = [ids[closed.ticket_id], ids[running.ticket_id]]
        assert all(count > 0 for table, count in (await rows_of(pg_pool, mine)).items() if table != "csat_responses")

        env = {"TEMPORAL_ADDRESS": client.service_client.config.target_host, "DATABASE_URL": database_url, **TEST_ENV}

        def erase(*args: str):
            from starter import app

            return CliRunner().invoke(app, ["erase-customer", customer, *args, "--data-dir", str(tmp_path)], env=env)

        refused = await asyncio.to_thread(erase, "--yes")
        assert refused.exit_code == 1 and f"running escalations: escalation-{running.ticket_id}" in refused.output
        await handles[running.ticket_id].terminate(reason="customer asked to be forgotten")

        planned = await asyncio.to_thread(erase)
        assert planned.exit_code == 0, planned.output
        assert "would delete 3 Temporal runs" in planned.output  # two escalations and one postmortem
        assert "nothing deleted" in planned.output
        assert (await rows_of(pg_pool, mine))["escalations"] == 2

        done = await asyncio.to_thread(erase, "--yes")
        assert done.exit_code == 0, done.output
        assert "deleted 3 Temporal runs" in done.output and "tickets 1" in done.output
        assert await rows_of(pg_pool, mine) == dict.fromkeys(TABLES, 0)
        assert await pg_pool.fetchval("SELECT count(*) FROM tickets WHERE customer_id = $1", customer) == 0
        # The server deletes a closed run in the background (30-40 s on the dev server).
        deleted = (closed.workflow_id, running.workflow_id, postmortem_id_for(closed.ticket_id))

        async def all_gone() -> None:
            for workflow_id in deleted:
                await gone(client, workflow_id)

        await eventually(all_gone, timeout=120, interval=1)

        # Nobody else's: the other customer's run and rows are untouched.
        assert (await rows_of(pg_pool, [ids[other.ticket_id]]))["escalations"] == 1
        assert (await current_state(client.get_workflow_handle(other.workflow_id))).customer.id == f"keep-{suffix}"
        await handles[other.ticket_id].terminate(reason="test done")
