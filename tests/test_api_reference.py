"""What client generators and readers of the API's reference get: stable ``operationId``s, and
``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) served from the API's own assets.

The browser test opens both pages in headless Chromium (Debian's ``/usr/bin/chromium``, driven
by Playwright) with every request to anywhere but the API aborted, and sees the operations
rendered. Without Chromium or Playwright it skips with the reason (fails under ``CI``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends

from escalations.api import health
from escalations.api.app import create_app
from escalations.api.deps import api_routes, public
from escalations.api.docs import ASSET_FILES, assets_dir
from escalations.settings import ApiSettings
from tests.helpers.api import api_settings, in_process, running_api, token_entries
from tests.helpers.servers import server_fault

OPERATION_IDS = {
    ("POST", "/escalations"): "startEscalation",
    ("GET", "/escalations"): "listEscalations",
    ("GET", "/escalations/{ticket_id}"): "getEscalation",
    ("GET", "/escalations/{ticket_id}/history"): "getEscalationHistory",
    ("GET", "/escalation-runs/{escalation_id}"): "getEscalationRun",
    ("POST", "/escalations/{ticket_id}/acknowledge"): "acknowledgeEscalation",
    ("POST", "/escalations/{ticket_id}/escalate"): "escalateEscalation",
    ("POST", "/escalations/{ticket_id}/notes"): "addEscalationNote",
    ("POST", "/escalations/{ticket_id}/pause"): "pauseEscalation",
    ("POST", "/escalations/{ticket_id}/resume"): "resumeEscalation",
    ("POST", "/escalations/{ticket_id}/resolve"): "resolveEscalation",
    ("POST", "/escalations/{ticket_id}/postmortem"): "completePostmortem",
    ("POST", "/escalations/{ticket_id}/csat"): "recordCsat",
    ("GET", "/kpis"): "getKpis",
    ("POST", "/tickets"): "upsertTicket",
    ("POST", "/tickets/zendesk"): "zendeskTicketWebhook",
    ("POST", "/tickets/freshdesk"): "freshdeskTicketWebhook",
    ("POST", "/tickets/intercom"): "intercomTicketWebhook",
    ("POST", "/integrations/jira/webhook"): "jiraWebhook",
    ("GET", "/actions/{action}/{token}"): "showActionLink",
    ("POST", "/actions/{action}/{token}"): "takeActionLink",
    ("POST", "/integrations/slack/interactions"): "slackInteractions",
    ("GET", "/livez"): "livez",
    ("GET", "/readyz"): "readyz",
    ("GET", "/healthz"): "healthz",
    ("GET", "/metrics"): "metrics",
    ("POST", "/codec/encode"): "encodePayloads",
    ("POST", "/codec/decode"): "decodePayloads",
}
CAMEL_CASE = re.compile(r"^[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*$")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def offline_settings() -> ApiSettings:
    """Settings for an app that is only built, never started (no Temporal, no Postgres)."""
    return ApiSettings.from_env({"ESCALATION_API_TOKENS": token_entries(), "DATABASE_URL": "postgresql://unused/x"})


def test_every_operation_has_a_stable_unique_camel_case_id():
    schema = create_app(offline_settings()).openapi()
    found = {(method.upper(), path): operation["operationId"]
             for path, operations in schema["paths"].items() for method, operation in operations.items()}
    for (method, path), operation_id in sorted(found.items()):
        print(f"{operation_id:24} {method:5} {path}")
    assert all(CAMEL_CASE.fullmatch(operation_id) for operation_id in found.values()), found
    assert len(set(found.values())) == len(found), "operation ids are not unique"
    assert found == OPERATION_IDS


def test_a_route_without_an_operation_id_is_refused(monkeypatch):
    combined = APIRouter()
    combined.include_router(health.router)

    @combined.get("/unnamed", dependencies=[Depends(public)])
    async def unnamed() -> dict[str, str]:
        return {}

    monkeypatch.setattr(health, "router", combined)
    with pytest.raises(RuntimeError, match="without an operation_id.*GET /unnamed"):
        create_app(offline_settings())


def test_every_route_is_an_operation_of_the_schema():
    app = create_app(offline_settings())
    assert {(method, path) for path, route in api_routes(app) for method in route.methods} == set(OPERATION_IDS)


LOCAL_URL = re.compile(r"""(?:src|href|url)\s*[=:]\s*["']?([^"'\s)>]+)""")


async def test_docs_pages_load_only_local_assets(client, database_url, task_queue):
    app = create_app(api_settings(client, database_url, task_queue))
    async with in_process(app, token="none") as http:
        for page, expected in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            response = await http.get(page)  # public: no token needed
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
            html = response.text
            assert expected in html
            urls = LOCAL_URL.findall(html)
            assert urls, html
            outside = [url for url in urls if not url.startswith("/")]
            assert not outside, f"{page} loads from outside the API: {outside}"
            assert "http://" not in html and "https://" not in html.replace("https://swagger.io", ""), html
            assert "default-src 'self'" in response.headers["content-security-policy"]
        assert '"displayOperationId": true' in (await http.get("/docs")).text
        types = {"swagger-ui-bundle.js": "javascript", "redoc.standalone.js": "javascript", "swagger-ui.css": "text/css",
                 "favicon.png": "image/png"}
        for name in ASSET_FILES:
            asset = await http.get(f"/docs/assets/{name}")
            assert asset.status_code == 200, name
            assert types[name] in asset.headers["content-type"], (name, asset.headers["content-type"])
            assert len(asset.content) == (assets_dir() / name).stat().st_size
        assert (await http.get("/docs/oauth2-redirect")).status_code == 200
        assert (await http.get("/docs/assets/../app.py")).status_code == 404


@pytest.fixture
def playwright_api() -> Any:
    if not CHROMIUM.exists():
        server_fault(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    try:
        from playwright import async_api
    except ImportError:
        server_fault("the playwright package is not installed: pip install -e '.[test]'")
    return async_api


@pytest.mark.browser
async def test_docs_render_the_operations_with_the_outside_world_blocked(
        playwright_api, client, database_url, task_queue, tmp_path):
    expect = playwright_api.expect
    expect.set_options(timeout=30_000)
    async with running_api(api_settings(client, database_url, task_queue)) as url:
        outside: list[str] = []

        async def only_the_api(route: Any) -> None:
            if route.request.url.startswith(url) or route.request.url.startswith(("data:", "blob:")):
                await route.continue_()
            else:
                outside.append(route.request.url)
                await route.abort()

        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                                       headless=True)
            try:
                context = await browser.new_context(viewport={"width": 1400, "height": 1000})
                await context.route("**/*", only_the_api)
                page = await context.new_page()
                refused: list[str] = []  # what the pages' Content-Security-Policy kept them from fetching
                page.on("console", lambda message: refused.append(message.text)
                        if "Content Security Policy" in message.text else None)

                await page.goto(f"{url}/docs", wait_until="domcontentloaded")
                operations = page.locator(".opblock")
                await expect(operations).to_have_count(len(OPERATION_IDS))
                await expect(page.get_by_text("startEscalation", exact=True)).to_be_visible()
                await expect(page.get_by_text("getEscalationHistory", exact=True)).to_be_visible()
                await expect(page.locator(".opblock-summary-description", has_text="Start an escalation")).to_be_visible()
                await page.screenshot(path=str(tmp_path / "swagger-ui.png"), full_page=False)

                await page.goto(f"{url}/redoc", wait_until="domcontentloaded")
                # ReDoc anchors each operation by its operationId: tag/<tag>/operation/<operationId>.
                await expect(page.locator("h2", has_text="Start an escalation")).to_be_visible()
                await expect(page.locator('a[href="#tag/escalations/operation/getEscalationHistory"]').first
                             ).to_be_attached()
                await expect(page.locator("h2", has_text="Every escalation of the ticket (read model)")).to_have_count(1)
                await page.screenshot(path=str(tmp_path / "redoc.png"), full_page=False)
            finally:
                await browser.close()
        assert outside == [], f"the docs pages asked for outside resources: {outside}"
        print("refused by the pages' Content-Security-Policy:", refused or "nothing")
        assert all("cdn.redoc.ly" in message for message in refused), refused  # ReDoc's badge only
