"""Ticket intake: POST /tickets, POST /tickets/zendesk (the adapter), `escalations tickets import`.

The router is mounted in a small FastAPI app with the API's own problem handlers and
dependencies (app.state carries the settings and the test's pool), on a real Postgres.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from typer.testing import CliRunner

from escalations.api.problems import (
    ProblemError,
    http_exception_handler,
    problem_error_handler,
    validation_exception_handler,
)
from escalations.settings import ApiSettings
from escalations.api.tickets import router
from schemas.ticket import ZendeskWebhook, from_zendesk, parse_zendesk_field_map

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def ticket_body(ticket_id: str = "T-7781", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ticket_id,
        "customer": {"id": "acme", "name": "Acme Corp", "segment": "enterprise"},
        "subject": "Dashboard export failing", "category": "Technical", "priority": "P2",
        "status": "open", "users_affected": 40, "interactions": 3,
        "opened_at": "2026-11-27T09:00:00Z", "updated_at": "2026-11-27T10:30:00Z",
        "first_response_due": None, "resolution_due": "2026-11-28T09:00:00Z",
        "integration_id": "exports", "description": "Exports time out.", "history": "09:00 reported",
    }
    body.update(overrides)
    return body


def zendesk_body(**overrides: Any) -> dict[str, Any]:
    ticket: dict[str, Any] = {
        "id": 35436, "url": "https://acme.zendesk.com/api/v2/tickets/35436.json",
        "subject": "Salesforce sync failing since yesterday", "status": "Open", "priority": "Urgent",
        "type": "incident", "created_at": "2026-11-27T09:00:00Z", "updated_at": "2026-11-27T10:30:00Z",
        "due_at": "2026-11-27T13:00:00Z",
        "description": "Our data stopped syncing yesterday.",
        "requester": {"id": 20978392, "name": "Head of Operations", "email": "ops@acme.example"},
        "organization": {"id": 57542, "name": "Acme Corp", "organization_fields": {"segment": "enterprise"}},
        "tags": ["salesforce", "sync"],
        "custom_fields": [{"id": 360001, "name": "users_affected", "value": "250"},
                          {"id": 360002, "value": "sf-prod-7"},
                          {"id": 999, "value": "ignored"}],
        "comment_count": 4,
        "satisfaction_rating": None, "via": {"channel": "web"},
    }
    ticket.update(overrides)
    return {"ticket": ticket}


def make_app(pg_pool, settings: Any) -> FastAPI:
    app = FastAPI()
    app.state.settings = settings
    app.state.pool = pg_pool
    app.add_exception_handler(ProblemError, problem_error_handler)
    app.add_exception_handler(RequestValidationError, validation_exception_handler)
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.include_router(router)
    return app


@pytest_asyncio.fixture
async def api(pg_pool) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(pg_pool, ApiSettings(tokens=(TOKEN,))))
    async with httpx.AsyncClient(transport=transport, base_url="http://tickets.test") as http:
        yield http


async def stored(pg_pool, ticket_id: str):
    return await pg_pool.fetchrow("SELECT * FROM tickets WHERE id = $1", ticket_id)


async def test_insert_update_unchanged_and_stale(api, pg_pool):
    first = await api.post("/tickets", json=ticket_body(), headers=AUTH)
    assert first.status_code == 201, first.text
    assert first.json()["outcome"] == "inserted"
    row = await stored(pg_pool, "T-7781")
    assert (row["status"], row["priority"], row["users_affected"], row["interactions"]) == ("open", "P2", 40, 3)
    assert row["category"] == "technical" and row["customer_segment"] == "enterprise"
    assert row["resolution_due"] == datetime(2026, 11, 28, 9, tzinfo=timezone.utc)
    assert row["document"]["category"] == "Technical" and row["source"] == "api"

    again = await api.post("/tickets", json=ticket_body(), headers=AUTH)
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"
    assert again.json()["note"] is None

    newer = await api.post("/tickets", json=ticket_body(users_affected=55, updated_at="2026-11-27T11:00:00Z"),
                           headers=AUTH)
    assert newer.status_code == 200 and newer.json()["outcome"] == "updated"
    assert (await stored(pg_pool, "T-7781"))["users_affected"] == 55

    older = await api.post("/tickets", json=ticket_body(users_affected=1, updated_at="2026-11-27T10:45:00+00:00"),
                           headers=AUTH)
    assert older.status_code == 200
    assert older.json()["outcome"] == "stale"
    assert "newer version" in older.json()["note"]
    assert older.json()["updated_at"] == "2026-11-27T11:00:00Z"
    row = await stored(pg_pool, "T-7781")
    assert row["users_affected"] == 55 and row["updated_at"] == datetime(2026, 11, 27, 11, tzinfo=timezone.utc)

    same_version_other_body = await api.post(
        "/tickets", json=ticket_body(users_affected=99, updated_at="2026-11-27T11:00:00Z"), headers=AUTH)
    assert same_version_other_body.status_code == 200
    assert same_version_other_body.json()["outcome"] == "unchanged"
    assert "already stored" in same_version_other_body.json()["note"]
    assert (await stored(pg_pool, "T-7781"))["users_affected"] == 55


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"customer": None}, ["body", "customer"]),
        ({"severity": "high"}, ["body", "severity"]),
        ({"priority": "P0"}, ["body", "priority"]),
        ({"status": "escalated"}, ["body", "status"]),
        ({"opened_at": "2026-11-27T09:00:00"}, ["body", "opened_at"]),
        ({"users_affected": -1}, ["body", "users_affected"]),
        ({"id": "has space"}, ["body", "id"]),
        ({"updated_at": "2026-11-27T08:00:00Z"}, ["body"]),
        ({"resolution_due": "2026-11-27T08:00:00Z"}, ["body"]),
    ],
)
async def test_malformed_ticket_is_422_with_field_errors_and_nothing_stored(api, pg_pool, change, loc):
    body = ticket_body("T-BAD", **change)
    if change.get("customer", ...) is None:
        del body["customer"]
    response = await api.post("/tickets", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["status"] == 422 and problem["errors"], problem
    assert any(error["loc"][: len(loc)] == loc for error in problem["errors"]), problem["errors"]
    assert await stored(pg_pool, "T-BAD") is None


async def test_token_required(api, pg_pool):
    response = await api.post("/tickets", json=ticket_body("T-NOAUTH"))
    assert response.status_code == 401
    wrong = await api.post("/tickets", json=ticket_body("T-NOAUTH"), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert await stored(pg_pool, "T-NOAUTH") is None


# -- Zendesk ----------------------------------------------------------------


def test_zendesk_adapter_maps_the_documented_fields():
    ticket = from_zendesk(ZendeskWebhook.model_validate(zendesk_body()), parse_zendesk_field_map("integration_id=360002"))
    assert ticket.id == "ZD-35436"
    assert ticket.subject == "Salesforce sync failing since yesterday"
    assert ticket.status == "open" and ticket.priority == "P1"
    assert ticket.customer.id == "57542" and ticket.customer.name == "Acme Corp"
    assert ticket.customer.segment == "enterprise" and ticket.customer.email == "ops@acme.example"
    assert ticket.opened_at == datetime(2026, 11, 27, 9, tzinfo=timezone.utc)
    assert ticket.updated_at == datetime(2026, 11, 27, 10, 30, tzinfo=timezone.utc)
    assert ticket.resolution_due == datetime(2026, 11, 27, 13, tzinfo=timezone.utc)
    assert ticket.users_affected == 250  # custom field matched by name, "250" → 250
    assert ticket.integration_id == "sf-prod-7"  # custom field matched by id through the field map
    assert ticket.interactions == 4
    assert ticket.category == "incident" and ticket.tags == ["salesforce", "sync"]
    assert ticket.description == "Our data stopped syncing yesterday."


@pytest.mark.parametrize(
    ("zendesk", "ours"),
    [("urgent", "P1"), ("high", "P2"), ("normal", "P3"), ("low", "P4"), (None, None)],
)
def test_zendesk_priorities(zendesk, ours):
    ticket = from_zendesk(ZendeskWebhook.model_validate(zendesk_body(priority=zendesk)))
    assert ticket.priority == ours


def test_zendesk_requester_without_organization_and_comments():
    body = zendesk_body(organization=None, comment_count=None, custom_fields=[], status="hold", comments=[
        {"author_id": 1, "plain_body": "It broke", "created_at": "2026-11-27T09:00:00Z"},
        {"author_id": 2, "body": "Looking into it", "created_at": "2026-11-27T09:30:00Z"},
    ])
    ticket = from_zendesk(ZendeskWebhook.model_validate(body))
    assert ticket.customer.id == "20978392" and ticket.customer.name == "Head of Operations"
    assert ticket.customer.segment is None and ticket.status == "hold"
    assert ticket.interactions == 2
    assert ticket.history == "2026-11-27 09:00 UTC 1: It broke\n2026-11-27 09:30 UTC 2: Looking into it"
    assert ticket.users_affected is None and ticket.integration_id is None


def test_zendesk_field_map_is_validated():
    assert parse_zendesk_field_map("users_affected=1, integration_id = 2") == {"1": "users_affected",
                                                                              "2": "integration_id"}
    with pytest.raises(ValueError, match="NAME=FIELD_ID"):
        parse_zendesk_field_map("severity=3")


async def test_zendesk_endpoint_stores_the_mapped_ticket(api, pg_pool):
    response = await api.post("/tickets/zendesk", json=zendesk_body(), headers=AUTH)
    assert response.status_code == 201, response.text
    assert response.json()["ticket_id"] == "ZD-35436"
    row = await stored(pg_pool, "ZD-35436")
    assert (row["priority"], row["status"], row["users_affected"], row["source"]) == ("P1", "open", 250, "zendesk")
    assert row["interactions"] == 4 and row["customer_id"] == "57542"

    again = await api.post("/tickets/zendesk", json=zendesk_body(), headers=AUTH)
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"


async def test_zendesk_custom_field_ids_from_the_settings(pg_pool):
    # ApiSettings gains ``zendesk_fields`` (ESCALATION_ZENDESK_FIELDS) when the lead wires it.
    settings = SimpleNamespace(api_tokens=ApiSettings.of(tokens=(TOKEN,)).api_tokens,
                               zendesk_fields=parse_zendesk_field_map("integration_id=360002"))
    transport = httpx.ASGITransport(app=make_app(pg_pool, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://tickets.test") as http:
        response = await http.post("/tickets/zendesk", json=zendesk_body(), headers=AUTH)
    assert response.status_code == 201, response.text
    assert (await stored(pg_pool, "ZD-35436"))["document"]["integration_id"] == "sf-prod-7"


async def test_zendesk_bad_payloads_are_422(api, pg_pool):
    missing = zendesk_body()
    del missing["ticket"]["subject"]
    response = await api.post("/tickets/zendesk", json=missing, headers=AUTH)
    assert response.status_code == 422
    assert ["body", "ticket", "subject"] in [e["loc"] for e in response.json()["errors"]]

    unmappable = await api.post("/tickets/zendesk", json=zendesk_body(priority="critical"), headers=AUTH)
    assert unmappable.status_code == 422, unmappable.text
    assert ["mapped", "priority"] in [e["loc"] for e in unmappable.json()["errors"]]
    assert await stored(pg_pool, "ZD-35436") is None


# -- escalations tickets import ---------------------------------------------


def run_cli(args: list[str], env: dict[str, str]):
    from starter import app

    return CliRunner().invoke(app, args, env=env)


async def test_import_jsonl(tmp_path: Path, database_url: str, pg_pool):
    await pg_pool.execute(
        """INSERT INTO tickets (id, customer_id, subject, category, status, opened_at, updated_at, document, source)
           VALUES ('T-3', 'acme', 's', 'general', 'open', '2026-11-27T09:00:00Z', '2026-11-28T00:00:00Z', '{}', 'api')"""
    )
    lines = [
        json.dumps(ticket_body("T-1")),
        "",
        json.dumps(ticket_body("T-2")),
        json.dumps(ticket_body("T-1", users_affected=70, updated_at="2026-11-27T12:00:00Z")),
        json.dumps(ticket_body("T-2")),
        json.dumps(ticket_body("T-3")),  # older than the stored version
    ]
    file = tmp_path / "tickets.jsonl"
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {"DATABASE_URL": database_url}
    result = await asyncio.to_thread(run_cli, ["tickets", "import", str(file), "--data-dir", str(tmp_path)], env)
    assert result.exit_code == 0, result.output
    assert "5 ticket(s)" in result.output
    assert "2 inserted, 1 updated, 1 unchanged, 1 stale" in result.output
    assert "line 6: T-3 stale" in result.output
    assert (await stored(pg_pool, "T-1"))["users_affected"] == 70
    assert (await stored(pg_pool, "T-1"))["source"] == "import"


async def test_import_with_an_invalid_line_imports_nothing(tmp_path: Path, database_url: str, pg_pool):
    file = tmp_path / "tickets.jsonl"
    file.write_text("\n".join([
        json.dumps(ticket_body("T-10")),
        json.dumps(ticket_body("T-11", priority="urgent", extra_field=1)),
        "{not json",
        json.dumps(ticket_body("T-12")),
    ]) + "\n", encoding="utf-8")
    env = {"DATABASE_URL": database_url}
    result = await asyncio.to_thread(run_cli, ["tickets", "import", str(file), "--data-dir", str(tmp_path)], env)
    assert result.exit_code == 1
    assert "line 2: priority: Input should be 'P1', 'P2', 'P3' or 'P4'" in result.output
    assert "line 2: extra_field: unknown key" in result.output
    assert "line 3: not valid JSON" in result.output
    assert "2 invalid line(s)" in result.output and "nothing imported" in result.output
    assert await pg_pool.fetchval("SELECT count(*) FROM tickets") == 0
