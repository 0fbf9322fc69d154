"""``GET /escalations`` a page at a time: 250 real escalations walked in pages of 100.

The runs are real (the real worker, a policy whose clocks are hours long so nothing fires
while the test runs), started through the Python client, which is what the API's start
calls. Visibility is eventually consistent: the test waits, with a deadline, until all 250
are listed with their search attributes before it walks the pages.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from escalations import client as ec
from escalations.api.app import create_app
from escalations.api.pagination import decode, encode
from escalations.api.problems import ProblemError
from tests.helpers.api import api_settings, in_process
from tests.helpers.policies import write_policy
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request

ESCALATIONS = 250
PAGE = 100
LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


@pytest_asyncio.fixture
async def http(client: Client, database_url: str, task_queue: str) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(create_app(api_settings(client, database_url, task_queue))) as http:
        yield http


def slow_policy(folder: Any) -> Any:
    """The test policy with hour-long clocks: the runs just wait while they are listed."""
    levels = [{"id": level, "name": level, "ack_within": "1h",
               "contacts": [{"name": "on-call", "channel": "log", "target": level}]}
              for level in ("tier1", "tier2", "engineering", "management")]
    targets = {"resolve_within": "8h", "customer_update_every": "4h"}
    return write_policy(folder, "fast", name="pages", levels=levels,
                        priorities={p: targets for p in ("P1", "P2", "P3", "P4")})


async def start_many(client: Client, task_queue: str, customer: str, count: int) -> set[str]:
    """``count`` escalations of ``customer``, started a few at a time; their ticket ids."""
    tickets = {f"PG-{uuid.uuid4().hex[:10]}" for _ in range(count)}
    gate = asyncio.Semaphore(20)

    async def start(ticket: str) -> None:
        request = blog_request(ticket, customer={"id": customer, "name": "Pages Co"}, priority="P2")
        async with gate:
            await ec.start_escalation(client, request, task_queue=task_queue)

    await asyncio.gather(*(start(ticket) for ticket in tickets))
    return tickets


async def test_250_escalations_walk_in_pages_of_100_without_duplicates_or_gaps(
        http, client, task_queue, start_worker, tmp_path):
    customer = f"pages-{uuid.uuid4().hex[:8]}"
    query = ec.visibility_query(customer_id=customer)
    async with start_worker(slow_policy(tmp_path)):
        tickets = await start_many(client, task_queue, customer, ESCALATIONS)

        async def all_visible() -> None:  # eventually consistent: wait until every run is listed
            count = (await client.count_workflows(query)).count
            assert count == ESCALATIONS, f"{count} of {ESCALATIONS} visible"

        await eventually(all_visible, timeout=90, interval=0.5)

        seen: list[str] = []
        sizes: list[int] = []
        response = await http.get("/escalations", params={"customer_id": customer, "limit": PAGE})
        while True:
            assert response.status_code == 200, response.text
            page = response.json()
            assert set(page) == {"items", "next_page_token"}  # no count pretending to be a total
            seen += [item["ticket_id"] for item in page["items"]]
            sizes.append(len(page["items"]))
            token = page["next_page_token"]
            if token is None:
                assert "link" not in response.headers
                break
            link = LINK.match(response.headers["link"])
            assert link, response.headers["link"]
            url = httpx.URL(link["url"])
            assert url.path == "/escalations" and url.params["page_token"] == token
            assert url.params["customer_id"] == customer and url.params["limit"] == str(PAGE)
            response = await http.get(link["url"])  # the Link header's URL is the next page
        assert len(seen) == len(set(seen)), "a ticket was listed twice"
        assert set(seen) == tickets, f"missing {len(tickets - set(seen))}, foreign {len(set(seen) - tickets)}"
        assert sizes[:3] == [PAGE, PAGE, ESCALATIONS - 2 * PAGE] and sum(sizes[3:]) == 0, sizes

        # Newest first, and the same walk with the token as a parameter.
        first = (await http.get("/escalations", params={"customer_id": customer, "limit": PAGE})).json()
        started = [item["started_at"] for item in first["items"]]
        assert started == sorted(started, reverse=True)
        second = await http.get("/escalations", params={"customer_id": customer, "limit": PAGE,
                                                        "page_token": first["next_page_token"]})
        assert {i["ticket_id"] for i in second.json()["items"]}.isdisjoint({i["ticket_id"] for i in first["items"]})

        # A token is good only with the filter that produced it.
        other = await http.get("/escalations", params={"customer_id": customer, "priority": "P1",
                                                       "page_token": first["next_page_token"]})
        assert other.status_code == 422, other.text
        problem = other.json()
        assert problem["errors"][0]["loc"] == ["query", "page_token"] and "another filter" in problem["detail"]


async def test_a_page_token_that_is_not_ours_is_a_422(http):
    for token in ("bm90LWEtdG9rZW4", "x", "eyJ2IjoxfQ"):  # base64url of junk, too short, {"v":1}
        response = await http.get("/escalations", params={"page_token": token})
        assert response.status_code == 422, (token, response.text)
        assert response.json()["errors"][0]["loc"] == ["query", "page_token"]
    document = json.loads(base64.urlsafe_b64decode(_padded(encode(b"temporal's", ec.visibility_query()))))
    document["t"] = base64.urlsafe_b64encode(b"edited").decode()  # the checksum no longer matches
    edited = base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")
    response = await http.get("/escalations", params={"page_token": edited})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", "page_token"]
    # A token made to pass our checks (the code is public) still gets a 422 when Temporal refuses it.
    forged = encode(b"\x00not temporal's", ec.visibility_query())
    response = await http.get("/escalations", params={"page_token": forged})
    assert response.status_code == 422, response.text
    assert "Temporal refused" in response.json()["detail"]
    bad_chars = await http.get("/escalations", params={"page_token": "a b"})
    assert bad_chars.status_code == 422


def _padded(text: str) -> str:
    return text + "=" * (-len(text) % 4)


def test_tokens_round_trip_and_are_bound_to_the_query():
    query = ec.visibility_query(priority="P1")
    token = encode(b"\x01\x02temporal", query)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert decode(token, query) == b"\x01\x02temporal"
    with pytest.raises(ProblemError, match="another filter") as refused:
        decode(token, ec.visibility_query(priority="P2"))
    assert refused.value.status == 422
