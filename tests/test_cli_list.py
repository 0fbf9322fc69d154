"""``escalations list``: a table that fits the terminal with the ticket id whole, ``--json`` in
its documented schema, and ``--status`` meaning the state's statuses (plus ``active``).

The snapshots (tests/snapshots/list-<width>.txt) are the table exactly as an 80- and a
120-column terminal shows it. A red snapshot test prints the new rendering; if the change is
meant, rewrite the files with ``UPDATE_SNAPSHOTS=1`` and look at the diff before committing.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console
from typer.testing import CliRunner

from escalations.cli import listing
from escalations.client import EscalationSummary, visibility_query
from tests.helpers.cli_schemas import validate
from tests.helpers.codec import TEST_ENV
from tests.helpers.paths import TESTS
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request

SNAPSHOTS = TESTS / "snapshots"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _summary(ticket: str, status: str, **values: object) -> EscalationSummary:
    started = values.pop("started_at", NOW - timedelta(hours=3))
    fields: dict[str, object] = {
        "workflow_id": f"escalation-{ticket}", "run_id": str(uuid.UUID(int=len(ticket))), "ticket_id": ticket,
        "status": status, "priority": "P1", "level": "engineering", "customer_id": "acme-corporation",
        "category": "integration", "kind": "priority", "sla_breached": False,
        "next_deadline": NOW + timedelta(minutes=12), "started_at": started, "closed_at": None,
        "execution_status": "running",
    }
    fields.update(values)
    return EscalationSummary.model_validate(fields)


ITEMS = [
    # The demo's ticket ids are 24 characters long: the one value people copy.
    _summary("SF-1042-20261127-103000", "acknowledged"),
    _summary("ZD-88213", "open", priority="P2", level="tier2", sla_breached=True,
             next_deadline=NOW - timedelta(minutes=3), customer_id="globex", category="billing",
             kind="functional"),
    _summary("JIRA-SUPPORT-2026-000017", "closed", priority="P3", level="tier1", customer_id="initech",
             category="performance", kind="hierarchical", next_deadline=NOW + timedelta(hours=2),
             closed_at=NOW - timedelta(minutes=30)),
]


def render(width: int, items: list[EscalationSummary] = ITEMS, more: bool = False) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False, markup=False)
    console.print(listing.table(items, now=NOW, more=more, console=console))
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 120])
def test_the_table_fits_the_terminal_and_keeps_the_ticket_id_whole(width: int) -> None:
    shown = render(width)
    print(shown)
    assert max(len(line) for line in shown.splitlines()) <= width
    for item in ITEMS:  # whole, on one line
        assert any(item.ticket_id in line for line in shown.splitlines()), item.ticket_id
    snapshot = SNAPSHOTS / f"list-{width}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.write_text(shown, encoding="utf-8")
    assert shown == snapshot.read_text(encoding="utf-8"), f"{snapshot.name} differs (UPDATE_SNAPSHOTS=1 rewrites it)"


def test_narrow_terminals_leave_columns_out_by_rank_and_say_which() -> None:
    at_80, at_120, at_200 = render(80), render(120), render(200)
    assert "not shown at this width:" in at_80 and "not shown at this width:" in at_120
    assert "not shown" not in at_200 and "closed (UTC)" in at_200
    header = next(line for line in at_80.splitlines() if line.startswith("ticket"))
    for kept in ("status", "prio", "SLA"):
        assert kept in header
    assert "kind" not in header and "kind" in at_80.split("not shown at this width:")[1]
    # Even narrower than the ticket ids' columns allow: the ticket id is still not cut.
    at_40 = render(40)
    for item in ITEMS:
        assert item.ticket_id in at_40
    # An ended run's last deadline means nothing any more.
    closed = next(line for line in at_200.splitlines() if line.startswith("JIRA-SUPPORT"))
    assert "in 2 h" not in closed
    assert "(more match: raise --limit)" in render(120, more=True)


def test_the_json_list_has_its_documented_schema() -> None:
    document = json.loads(listing.as_json(ITEMS, more=True))
    validate("list", document)
    assert [item["ticket_id"] for item in document["items"]] == [item.ticket_id for item in ITEMS]
    assert document["more"] is True and "execution_status" not in document["items"][0]


def test_each_status_filter_is_one_visibility_query() -> None:
    base = "WorkflowType = 'EscalationWorkflow' AND ExecutionStatus != 'ContinuedAsNew'"
    running = "ExecutionStatus = 'Running'"
    for status in ("open", "acknowledged", "paused", "resolved"):
        assert visibility_query(status=status) == f"{base} AND EscalationStatus = '{status}' AND {running}"
    assert visibility_query(status="active") == f"{base} AND {running}"
    assert visibility_query(status="closed") == f"{base} AND EscalationStatus = 'closed'"
    # A run that ended without closing keeps its last EscalationStatus: Temporal says how it ended.
    assert visibility_query(status="failed") == f"{base} AND ExecutionStatus IN ('Failed', 'TimedOut')"
    assert visibility_query(status="terminated") == f"{base} AND ExecutionStatus IN ('Terminated', 'Canceled')"


# -- against the real stack ------------------------------------------------------------


@pytest.fixture
def cli(client, task_queue, database_url, tmp_path):
    from starter import app

    runner = CliRunner()
    env = {"TEMPORAL_ADDRESS": client.service_client.config.target_host, "TEMPORAL_NAMESPACE": client.namespace,
           "ESCALATION_TASK_QUEUE": task_queue, "DATABASE_URL": database_url, "ESCALATION_DATA_DIR": None,
           **TEST_ENV, "XDG_STATE_HOME": str(tmp_path / "state")}

    async def run(*args: str, columns: int = 200):
        result = await asyncio.to_thread(runner.invoke, app, [*args, "--data-dir", str(tmp_path)],
                                         env={**env, "COLUMNS": str(columns)})
        assert result.exit_code == 0, f"{result.output}\n{result.stderr}\n{result.exception!r}"
        return result.stdout

    return run


async def test_status_filters_and_json_on_a_live_list(cli, client, task_queue, start_worker, tmp_path):
    customer = f"list-{uuid.uuid4().hex[:6]}"
    tickets = [f"SF-1042-20261127-{n}{uuid.uuid4().hex[:5]}" for n in (1, 2)]
    async with start_worker("fast"):
        for ticket in tickets:
            path = tmp_path / f"{ticket}.json"
            path.write_text(json.dumps(blog_request(ticket, customer={"id": customer, "name": "List Corp"}).as_body()))
            await cli("start", str(path))
        await cli("ack", tickets[0], "--by", "dana")

        async def listed(status: str) -> set[str]:
            document = json.loads(await cli("list", "--customer-id", customer, "--status", status, "--json"))
            validate("list", document)
            return {item["ticket_id"] for item in document["items"]}

        async def filtered() -> None:
            # `open` is the state's open (not yet acknowledged); `active` is every run still going.
            assert await listed("open") == {tickets[1]}
            assert await listed("acknowledged") == {tickets[0]}
            assert await listed("active") == set(tickets)

        await eventually(filtered, timeout=15)
        assert await listed("closed") == set()
        narrow = await cli("list", "--customer-id", customer, columns=80)
        assert max(len(line) for line in narrow.splitlines()) <= 80
        for ticket in tickets:
            assert ticket in narrow
