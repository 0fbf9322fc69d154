"""The action link's pages in a real browser (headless Chromium): what Dana sees when she follows
the Acknowledge link of her page, confirms, and follows it again.

The API is served over HTTP (uvicorn, as ``escalations api`` serves it) on 127.0.0.1, which is
also the worker's ``ESCALATION_PUBLIC_URL``: the page's link is the address the browser opens.
Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright with ``executable_path``;
without it the test skips with the reason (fails under ``CI``), as tests/test_browser.py does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from escalations.api.server import serve
from escalations.devstack.postgres import free_port
from tests.helpers.api import api_settings
from tests.helpers.escalations import current_state, start_escalation
from tests.helpers.receivers import HttpRecorder
from tests.helpers.requests import blog_request
from tests.helpers.responders import ACTION_KEY, page, responders_policy, worker_environ
from tests.helpers.servers import server_fault

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000


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


async def test_dana_confirms_the_acknowledge_link_in_a_browser(
        browser_api, client, task_queue, start_worker, database_url, tmp_path):
    expect = browser_api.expect
    expect.set_options(timeout=TIMEOUT_MS)
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url)
        environ = {**worker_environ(hooks.url), "ESCALATION_PUBLIC_URL": public_url}
        settings = api_settings(client, database_url, task_queue, policy_file=str(policy), action_key=ACTION_KEY,
                                host="127.0.0.1", port=port)
        stop = asyncio.Event()
        ready = asyncio.Event()
        api = asyncio.create_task(serve(settings, stop, on_ready=lambda _url: ready.set()))
        try:
            await asyncio.wait_for(ready.wait(), 30)
            async with start_worker(policy, environ=environ):
                handle = await start_escalation(client, blog_request(), task_queue)
                opened = await page(hooks, "/tier2", "escalation_opened")
                link = opened["actions"]["acknowledge"]
                assert link.startswith(f"{public_url}/actions/acknowledge/")
                ticket = opened["ticket_id"]

                async with browser_api.async_playwright() as playwright:
                    browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                                               headless=True)
                    try:
                        tab = await browser.new_page(viewport={"width": 900, "height": 800})
                        tab.set_default_timeout(TIMEOUT_MS)
                        blocked: list[str] = []
                        tab.on("console", lambda message: blocked.append(message.text)
                               if "Content Security Policy" in message.text else None)

                        # The confirmation page: what the link does, the escalation, a button.
                        shown = await tab.goto(link, wait_until="load")
                        assert shown is not None and shown.status == 200
                        assert "default-src 'none'" in (await shown.all_headers())["content-security-policy"]
                        await expect(tab).to_have_title(f"Acknowledge {ticket}?")
                        await expect(tab.get_by_role("heading", level=1)).to_have_text(f"Acknowledge {ticket}?")
                        await expect(tab.get_by_text("Nothing happens until you confirm")).to_be_visible()
                        await expect(tab.locator("dl.state")).to_contain_text("Tier 2 Support (tier2)")
                        await expect(tab.locator("dl.state")).to_contain_text("open")
                        assert await tab.locator("script").count() == 0
                        await tab.screenshot(path=str(tmp_path / "action-confirm.png"), full_page=True)
                        assert (await current_state(handle)).acknowledged_by is None  # the GET changed nothing

                        # Confirm: the form posts back to the link; the result page says who and when.
                        await tab.get_by_role("button", name="Acknowledge as Dana").click()
                        await expect(tab.get_by_role("heading", level=1)).to_contain_text("Acknowledged by Dana at")
                        await expect(tab.locator("dl.state")).to_contain_text("by Dana (link:webhook)")
                        await tab.screenshot(path=str(tmp_path / "action-done.png"), full_page=True)
                        state = await current_state(handle)
                        assert (state.acknowledged_by, state.acknowledged_via) == ("Dana", "link:webhook")

                        # The same link again: already done, no button.
                        again = await tab.goto(link, wait_until="load")
                        assert again is not None and again.status == 409
                        await expect(tab.get_by_role("heading", level=1)).to_have_text("Already done")
                        await expect(tab.get_by_text("it acts only once")).to_be_visible()
                        assert await tab.get_by_role("button").count() == 0
                        assert blocked == [], blocked  # the pages need nothing the policy forbids
                    finally:
                        await browser.close()
        finally:
            stop.set()
            await asyncio.wait_for(api, 30)
