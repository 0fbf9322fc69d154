"""``--json`` on ``status`` and ``kpis`` (``list``: tests/test_cli_list.py): real output, checked
against the documented schemas (docs/schemas/cli-*.schema.json), whose fields docs/cli.md lists."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import pytest
from typer.testing import CliRunner

from tests.helpers.cli_schemas import schema, validate
from tests.helpers.codec import TEST_ENV
from tests.helpers.paths import ROOT
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request


WORKER_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ (activities|escalations\.notifications|temporalio)")


@pytest.fixture
def cli(client, task_queue, database_url, tmp_path):
    from starter import app

    runner = CliRunner()
    env = {"TEMPORAL_ADDRESS": client.service_client.config.target_host, "TEMPORAL_NAMESPACE": client.namespace,
           "ESCALATION_TASK_QUEUE": task_queue, "DATABASE_URL": database_url, "ESCALATION_DATA_DIR": None,
           **TEST_ENV, "XDG_STATE_HOME": str(tmp_path / "state"), "COLUMNS": "120"}

    async def run(*args: str) -> str:
        result = await asyncio.to_thread(runner.invoke, app, [*args, "--data-dir", str(tmp_path)], env=env)
        assert result.exit_code == 0, f"{result.output}\n{result.stderr}\n{result.exception!r}"
        # Nothing but the document on stdout, nothing of the command's on stderr. The test's worker
        # runs in this process and logs to the current stderr, which CliRunner captures meanwhile.
        assert [line for line in result.stderr.splitlines() if not WORKER_LOG_LINE.match(line)] == []
        return result.stdout

    return run


async def test_status_and_kpis_json_have_their_documented_schemas(cli, start_worker, tmp_path):
    ticket = f"JSON-{uuid.uuid4().hex[:8]}"
    file = tmp_path / "request.json"
    file.write_text(json.dumps(blog_request(ticket).as_body()), encoding="utf-8")
    async with start_worker("fast"):
        await cli("start", str(file))

        async def live() -> dict:
            document = json.loads(await cli("status", ticket, "--json"))
            assert document["status"] == "open"
            return document

        opened = await eventually(live, timeout=15)
        validate("status", opened)
        assert opened["ticket_id"] == ticket and opened["trigger"]["source"] == "cli"
        await cli("ack", ticket, "--by", "dana")
        await cli("resolve", ticket, "--by", "dana", "--root-cause", "schema change", "--mitigation", "mapped")
        await cli("postmortem", ticket, "--by", "dana", "--summary", "s", "--root-cause", "r", "--improvement", "i")

    closed = json.loads(await cli("status", ticket, "--json"))  # from the read model
    validate("status", closed)
    assert closed["status"] == "closed" and closed["closed_at"] is not None

    report = json.loads(await cli("kpis", "--json"))
    validate("kpis", report)
    assert report["escalations"] == 1 and report["resolved"] == 1
    assert report["by_priority"] == [{"key": "P1", "escalations": 1}]
    empty = json.loads(await cli("kpis", "--json", "--since", "2000-01-01", "--until", "2000-01-02"))
    validate("kpis", empty)
    assert empty["escalations"] == 0 and empty["mean_time_to_resolution_seconds"] is None


def _documented_fields(section: str) -> set[str]:
    """The first column of the field table under ``### <section>`` in docs/cli.md."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    body = text.split(f"### {section}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", body, re.MULTILINE))


@pytest.mark.parametrize(("name", "section"), [
    ("status", "`escalations status ID --json`"),
    ("list", "`escalations list --json`"),
    ("kpis", "`escalations kpis --json`"),
])
def test_docs_list_every_field_of_each_schema(name: str, section: str) -> None:
    documented = _documented_fields(section)
    properties = set(schema(name)["properties"])
    if name == "list":  # the table describes an item; the envelope is named in the text
        properties = set(schema(name)["properties"]["items"]["items"]["properties"])
    assert documented == properties, f"docs/cli.md {section}: documented {sorted(documented ^ properties)} differ"
