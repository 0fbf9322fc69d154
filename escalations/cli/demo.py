"""``escalations demo``: the blog's Salesforce-sync escalation, replayed in about a minute.

Acme Corp (enterprise) reports that its Salesforce sync broke; Tier 1 opens a P1
with the handoff context; nobody at Tier 2 acknowledges in time, so the workflow
escalates to Engineering on its own and a Jira issue records it; the customer is
told updates come every 2 hours; Engineering acknowledges, finds the root cause
(a Salesforce API schema change) and ships a hotfix; the resolution goes to the
customer; the postmortem closes the escalation. Then, with no human action: a Globex
ticket affecting 40 users is only stored (as ``POST /tickets`` stores it); one run of
the criteria sweep (``CriteriaSweepWorkflow``, restricted to that ticket) matches the
policy's ``many-users`` rule and opens a P1 escalation, which the demo then closes
(acknowledge, resolve, postmortem) so nothing is left on its task queue.

Every step is a real call on a real ``EscalationWorkflow`` run, and what is printed
comes from the run itself (the ``state`` query) and from the notification ledger.
The demo runs on the packaged ``escalations/policies/demo.yaml`` (1 s stands for 1 min), with
its own worker on its own task queue (``demo-<id>``), and a built-in Jira-compatible
receiver (``escalations/devstack/fake_jira.py``) on 127.0.0.1 that its worker's Jira channel
posts to. It finds Temporal and Postgres like every command: the environment
(``TEMPORAL_ADDRESS``, ``DATABASE_URL``) first, then ``DIR/stack.json`` of
``escalations dev``.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from escalations.cli.principal import cli_principal
from escalations.client import EscalationAlreadyOpen, start_escalation
from escalations.connect import (
    HOW_TO_POINT,
    Connection,
    require_database,
)
from escalations.links import escalations_query, workflow_url, workflows_url

if TYPE_CHECKING:
    import asyncpg
    import httpx
    from temporalio.client import Client

    from escalations.cli.fake_jira import FakeJira
    from schemas.policy import Policy

SCALE = 60
"""One second of demo time stands for this many seconds of escalation time (escalations/policies/demo.yaml)."""
SCALE_LABEL = "1 s = 1 min"
STEPS = 8
JIRA_EMAIL = "escalations-demo@example.test"
KB_URL = "https://kb.example.com/articles/salesforce-schema-change-sf-prod-7"


class DemoError(RuntimeError):
    """The demo cannot go on; the message says what it waited for or what failed."""


@dataclass(frozen=True)
class DemoOptions:
    ticket_id: str
    pace: float
    timeout: float = 90.0


# -- the stack ------------------------------------------------------------------


def scaled(seconds: float) -> str:
    """Demo seconds as escalation time: ``120`` -> ``2 h``, ``15`` -> ``15 min``."""
    minutes = round(seconds * SCALE / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")


def sweep_sentence(installed: Any) -> str:
    """Where the sweep runs on its own, from the installed schedule (``escalations.schedules.installed_sweep``)."""
    from escalations.schedules import SCHEDULE_ID
    from schemas.durations import format_duration

    now = "the demo runs one sweep now, restricted to its own ticket"
    if installed is None:
        return (f"No schedule runs it on this Temporal (`escalations schedule install` or `escalations dev` "
                f"installs {SCHEDULE_ID}); {now}.")
    every = f"every {format_duration(installed.every)}" if installed.every else "on its calendar"
    policy = (f" with policy {installed.policy}" + (f" v{installed.policy_version}" if installed.policy_version else "")
              if installed.policy else "")
    paused = " (paused now)" if installed.paused else ""
    return f"On this stack the schedule {SCHEDULE_ID} runs it {every}{policy}{paused}; {now}."


def _rule_text(rule: Any) -> str:
    """``many-users: users_affected_at_least 10 → priority P1``."""
    from schemas.durations import format_duration

    conditions = ", ".join(
        f"{name} {format_duration(value) if isinstance(value, timedelta) else value}"
        for name, value in rule.when.model_dump(exclude_none=True).items()
    )
    return f"{rule.name}: {conditions} → {rule.open_as.kind} {rule.open_as.priority}"


def ui_link(connection: Connection, workflow_id: str) -> str | None:
    return workflow_url(connection.ui_url, connection.namespace, workflow_id)


async def run_demo(connection: Connection, options: DemoOptions, console: Console) -> None:
    """Start the worker and the fake Jira, tell the story, stop everything it started."""
    import asyncpg
    import httpx

    from escalations.cli.fake_jira import FakeJira
    from escalations.connect import temporal_client
    from escalations.db.migrate import migrate
    from escalations.db.pool import create_pool
    from escalations.policies import PolicySource, packaged_policy
    from escalations.settings import ConfigError, NotificationSettings, WorkerSettings
    from schemas.policy import PolicyError
    from worker import build_worker

    # SIGTERM stops the demo like Ctrl-C does: the story's clean-up terminates its run.
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    database_url = require_database(connection)
    policy_file = packaged_policy("demo")
    source = PolicySource.from_setting(str(policy_file))
    try:
        policy = source.load("demo")
    except PolicyError as exc:
        raise DemoError(f"the packaged demo policy is invalid: {exc}") from None
    task_queue = f"demo-{uuid.uuid4().hex[:8]}"
    target = str(connection.temporal.get("target_host"))
    try:
        applied = await migrate(database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DemoError(f"cannot use the database: {exc}".splitlines()[0]) from None
    try:
        client = await temporal_client(connection)
    except RuntimeError as exc:
        raise DemoError(
            f"cannot reach Temporal at {target}: {exc}. Start the stack with `escalations dev`, point to "
            f"its data dir with {HOW_TO_POINT}, or set TEMPORAL_ADDRESS."
        ) from None

    console.print(Panel.fit(
        "[bold]Escalation demo[/]: the Salesforce-sync example of “Escalation Management: How to Handle "
        "Complex Customer Issues in a SaaS Company”\n"
        f"Time scale [bold]{SCALE_LABEL}[/] (policy [bold]{policy.name}[/] v{policy.version}: "
        f"P1 resolve within {scaled(policy.priorities['P1'].resolve_within.total_seconds())}, "
        f"customer update every {scaled(policy.priorities['P1'].customer_update_every.total_seconds())})\n"
        f"Temporal {target} · namespace {connection.namespace} · task queue {task_queue} (its own worker)"
        + (f"\nmigrations applied now: {', '.join(applied)}" if applied else ""),
        border_style="cyan",
    ))

    async with AsyncExitStack() as stack:
        jira = await stack.enter_async_context(
            FakeJira(email=JIRA_EMAIL, api_token=secrets.token_urlsafe(18))
        )
        http = await stack.enter_async_context(httpx.AsyncClient())
        pool = await create_pool(database_url, max_size=10)
        stack.push_async_callback(pool.close)
        # Only what the demo policy's channels need: log, Jira and Slack's #eng-oncall on the
        # built-in receiver, and the stack's action-link key and public URL when it has them.
        try:
            settings = NotificationSettings.of(
                jira_base_url=jira.url, jira_email=jira.email, jira_api_token=jira.api_token,
                ui_url=connection.ui_url or "http://localhost:8233", namespace=connection.namespace,
                slack_webhook_urls={"ENG_ONCALL": jira.hook_url("eng-oncall")},
                action_key=connection.action_key, public_url=connection.public_url,
            )
        except ConfigError as exc:
            raise DemoError(f"the action-link settings are unusable: {exc}") from None
        worker = build_worker(
            client, pool, http, policies=source, notification_settings=settings,
            settings=WorkerSettings.of(
                task_queue=task_queue, database_url=database_url, policy_file=str(policy_file),
                max_cached_workflows=100, max_concurrent_activities=20,
                max_concurrent_local_activities=20, max_concurrent_workflow_tasks=20,
                sticky_queue_timeout_seconds=2,
            ),
        )
        await stack.enter_async_context(worker)
        story = Story(client=client, pool=pool, jira=jira, connection=connection, options=options,
                      console=console, task_queue=task_queue, policy=policy, http=http,
                      links=settings.action_links)
        await story.tell()


# -- the story ------------------------------------------------------------------


def _title(page: str) -> str:
    """The <title> of one of the API's small HTML pages."""
    import html
    import re

    found = re.search(r"<title>(.*?)</title>", page, re.DOTALL)
    return html.unescape(found.group(1)).strip() if found else page[:200]


def httpx_errors() -> tuple[type[Exception], ...]:
    import httpx

    return (httpx.HTTPError,)


_DEADLINE_LABELS = {
    "ack_due": "acknowledgement due",
    "resolve_due": "resolution due",
    "next_customer_update_due": "customer update due",
    "at_risk_at": "SLA at-risk warning",
}


class Story:
    """The seven steps of the blog's example, each a real call on the run, narrated."""

    def __init__(self, *, client: Client, pool: asyncpg.Pool, jira: FakeJira, connection: Connection,
                 options: DemoOptions, console: Console, task_queue: str, policy: Policy,
                 http: httpx.AsyncClient, links: bool) -> None:
        from schemas.escalation import (
            Customer,
            EscalationRequest,
            Handoff,
            Impact,
            Trigger,
        )

        self.client = client
        self.pool = pool
        self.jira = jira
        self.connection = connection
        self.options = options
        self.console = console
        self.task_queue = task_queue
        self.policy = policy
        self.http = http
        self.links = links  # pages carry action links (the stack's key and public URL are known)
        self.via = cli_principal()
        yesterday = datetime.now(UTC) - timedelta(days=1)
        self.request = EscalationRequest(
            ticket_id=options.ticket_id,
            title="Salesforce sync failing since yesterday",
            customer=Customer(id="acme", name="Acme Corp", segment="enterprise",
                              timezone="America/New_York", email="ops@acme.example"),
            category="integration",
            kind="priority",
            priority="P1",
            impact=Impact(users_affected=250, critical=True,
                          description="board meeting tomorrow depends on the synced data"),
            handoff=Handoff(
                ticket_history=(
                    "Head of Operations (Acme Corp) called: data stopped syncing yesterday, board meeting "
                    "tomorrow. Tier 1 checked the sync history: every Salesforce run has failed since "
                    "yesterday 16:05 UTC; restarting the connector did not help."
                ),
                error_logs=(
                    f"{yesterday:%Y-%m-%d}T16:05:12Z sync sf-prod-7 FAILED: INVALID_FIELD: No such column "
                    "'AccountRegion__c' on entity 'Account' (REST /services/data/v61.0/query)"
                ),
                integration_id="sf-prod-7",
                steps_to_reproduce=(
                    "1. Settings > Integrations > Salesforce (sf-prod-7)  2. Run sync now  "
                    "3. The run fails at the Accounts stage with INVALID_FIELD"
                ),
            ),
            policy="demo",
            trigger=Trigger(source="cli", detail="Tier 1 (Sam Rivera) via `escalations demo`", via=self.via),
        )
        self.workflow_id = self.request.workflow_id
        self.handle: Any = None
        self.escalation_id: str | None = None
        self.shown_seq: dict[str, int] = {}  # escalation id -> last notification seq printed
        # Runs to terminate if the demo stops early (only if running on this demo's own queue).
        self.cleanup_ids: list[str] = []
        self.swept: Any = None  # the sweep's escalation (step 8), once closed
        suffix = task_queue.removeprefix("demo-")
        self.sweep_ticket_id = f"T-{suffix}"
        self.sweep_id = f"demo-sweep-{suffix}"
        self.step = 0
        self.started = time.monotonic()
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, transient=True,
        )
        self.task = self.progress.add_task("starting", total=STEPS)

    # -- output ------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.progress.console.print(text)

    def status(self, text: str) -> None:
        self.progress.update(self.task, description=f"step {self.step}/{STEPS} · {text}")

    async def begin(self, title: str, quote_text: str | None = None) -> None:
        if self.step:
            self.progress.advance(self.task)
            await asyncio.sleep(self.options.pace)
        self.step += 1
        self.status(title)
        self.say(f"\n[bold cyan]Step {self.step}/{STEPS} · {title}[/]")
        if quote_text:
            self.say(f"  [italic]“{escape(quote_text)}”[/]")

    def happened(self, text: str) -> None:
        self.say(f"  [green]✔[/] {text}")

    def state_line(self, state: Any) -> None:
        now = datetime.now(UTC)
        deadlines = {name: getattr(state.deadlines, name) for name in _DEADLINE_LABELS}
        upcoming = sorted((at, name) for name, at in deadlines.items() if at is not None)
        if upcoming:
            at, name = upcoming[0]
            left = max((at - now).total_seconds(), 0)
            nxt = f"{_DEADLINE_LABELS[name]} {at:%H:%M:%S} UTC (in {left:.0f} s ≈ {scaled(left)})"
        else:
            nxt = "none"
        sla = "[red]BREACHED[/]" if state.sla_breached else ("[yellow]at risk[/]" if state.sla_at_risk else "on track")
        self.say(
            f"    [dim]state:[/] status [bold]{state.status}[/] · level [bold]{escape(state.level_name)}[/] "
            f"({state.level}) · owner [bold]{escape(state.owner or '—')}[/] · next deadline {nxt} · SLA {sla}"
        )

    async def messages(self, *event_types: str, escalation_id: str | None = None) -> None:
        """Wait until the notifications of the latest of these events are delivered; print them.

        Of the blog's run, or of the escalation ``escalation_id``."""
        from activities.templates import render
        from escalations.db.eventstore import latest_seq_of
        from escalations.db.ledger import rows_after

        escalation_id = escalation_id or self.escalation_id
        assert escalation_id is not None
        shown = self.shown_seq.get(escalation_id, 0)
        # PostgreSQL follows Temporal history a moment later (the projection): wait for it.
        deadline = time.monotonic() + 30
        while True:
            async with self.pool.acquire() as conn:
                target = await latest_seq_of(conn, escalation_id, list(event_types))
            if target is not None and target > shown:
                break
            if time.monotonic() > deadline:
                raise DemoError(f"no {'/'.join(event_types)} event recorded for escalation {escalation_id}")
            await asyncio.sleep(0.1)
        while True:
            async with self.pool.acquire() as conn:
                rows = await rows_after(conn, escalation_id, shown)
            if rows and max(r["seq"] for r in rows) >= target and all(
                r["status"] in ("sent", "failed") for r in rows
            ):
                break
            if time.monotonic() > deadline:
                raise DemoError(f"the notifications of {'/'.join(event_types)} were not delivered within 30 s")
            await asyncio.sleep(0.2)
        for row in rows:
            message = render(row["template"], row["context"], row["audience"])
            where = f"{row['channel']}:{row['target']}" if row["target"] else row["channel"]
            mark = "[red]✘[/]" if row["status"] == "failed" else "✉"
            if row["audience"] == "customer":
                text = " ".join(message.summary.split())
                self.say(f"    {mark} [magenta]to the customer[/] ({where}): [bold]{escape(message.subject)}[/] — "
                         f"{escape(text[:800])}")
            else:
                extra = f" → [bold]{row['provider_response_id']}[/]" if row["channel"] == "jira" else ""
                self.say(f"    {mark} to {escape(row['recipient'])} ({where}): {escape(message.subject)}{extra}")
            if row["status"] == "failed":
                self.say(f"      [red]{escape(row['last_error'] or 'failed')}[/]")
        self.shown_seq[escalation_id] = max(shown, *(r["seq"] for r in rows))

    async def pause(self) -> None:
        await asyncio.sleep(self.options.pace / 2)

    # -- talking to the run ------------------------------------------------------

    async def state(self, run: Any = None) -> Any:
        """The ``state`` query of the blog's run (or of the escalation handle ``run``)."""
        from schemas.escalation import EscalationState

        return await (run or self.handle).query("state", result_type=EscalationState)

    async def until(self, check: Callable[[Any], bool], what: str, *, timeout: float | None = None,
                    countdown: Callable[[Any], datetime | None] | None = None, run: Any = None) -> Any:
        """Poll the ``state`` query until ``check`` holds; show a countdown while waiting."""
        from temporalio.client import WorkflowQueryFailedError

        deadline = time.monotonic() + (timeout or self.options.timeout)
        state = None
        while True:
            try:
                state = await self.state(run)
            except WorkflowQueryFailedError:
                state = None  # still opening
            if state is not None and check(state):
                return state
            if state is not None and state.notifications_failed:
                await self._report_failures(state.escalation_id)
            if time.monotonic() > deadline:
                raise DemoError(f"timed out waiting for {what} (last state: "
                                f"{state.status + ' at ' + state.level if state else 'not ready'})")
            label = what
            if countdown is not None and state is not None:
                at = countdown(state)
                if at is not None:
                    label += f" · {max((at - datetime.now(UTC)).total_seconds(), 0):.0f} s left"
            self.status(label)
            await asyncio.sleep(0.25)

    async def _report_failures(self, escalation_id: str) -> None:
        from escalations.db.ledger import failed_rows

        async with self.pool.acquire() as conn:
            rows = await failed_rows(conn, escalation_id)
        detail = "; ".join(f"{r['recipient']} ({r['channel']}): {r['last_error']}" for r in rows)
        raise DemoError(f"a notification failed: {detail or 'see the notifications table'}")

    async def update(self, name: str, command: Any, run: Any = None) -> Any:
        from schemas.escalation import EscalationState

        return await (run or self.handle).execute_update(name, self.as_caller(command), result_type=EscalationState)

    def as_caller(self, command: Any) -> Any:
        """The command as sent by whoever runs the demo (``via``), like any CLI command."""
        return command.model_copy(update={"via": self.via})

    # -- acting from the page ----------------------------------------------------

    def _page_link(self, action: str) -> str | None:
        """The ``action`` link of the latest Slack page to #eng-oncall (the demo's receiver got it)."""
        for _hook, message in reversed(self.jira.messages):
            for block in message.get("blocks") or []:
                for element in block.get("elements") or [] if block.get("type") == "actions" else []:
                    if element.get("action_id") == action and element.get("url"):
                        return str(element["url"])
        return None

    async def acknowledge_from_the_page(self) -> Any:
        """Alex Chen acknowledges from the link in his Slack page: GET (a confirmation page, nothing
        changes), then POST (the acknowledgement, as him, via link:slack). Without the stack's
        action-link key the pages carry no links, and the demo acknowledges as the CLI would."""
        from schemas.escalation import AcknowledgeCommand

        name = "Alex Chen (Engineering)"
        if not self.links:
            self.happened("Pages carry no action links here (no ESCALATION_ACTION_KEY and ESCALATION_PUBLIC_URL, "
                          "nor a stack.json of `escalations dev`): Engineering acknowledges with the CLI's command")
            return await self.update("acknowledge", AcknowledgeCommand(by=name))
        link = self._page_link("acknowledge")
        if link is None:
            raise DemoError("the Slack page to #eng-oncall carries no Acknowledge link")
        shown = self.jira.messages[-1][1].get("text", "")
        self.happened(f"{escape(name)} gets the page in Slack (#eng-oncall, caught by the demo's receiver): "
                      f"“{escape(shown)}” with buttons Acknowledge · Escalate · Add a note")
        try:
            confirm = await self.http.get(link, timeout=15)
            if confirm.status_code != 200:
                raise DemoError(f"the Acknowledge link answered HTTP {confirm.status_code}: {_title(confirm.text)}")
            self.happened(f"He opens Acknowledge: the page asks “{escape(_title(confirm.text))}” and changes "
                          "nothing until he confirms")
            done = await self.http.post(link, timeout=30)
        except httpx_errors() as exc:
            raise DemoError(f"the API behind the link ({self.connection.public_url}) did not answer: "
                            f"{type(exc).__name__}; is `escalations dev` running?") from None
        if done.status_code != 200:
            raise DemoError(f"confirming the Acknowledge link answered HTTP {done.status_code}: {_title(done.text)}")
        self.happened(f"He confirms: “{escape(_title(done.text))}” — the link acts once, as him")
        return await self.state()

    # -- the steps ---------------------------------------------------------------

    async def tell(self) -> None:
        with self.progress:
            try:
                await self._story()
            except BaseException:
                await self._abandon()
                raise
        self._summary(await self.handle.result())

    async def _abandon(self) -> None:
        """A run left behind would wait forever on a queue nobody polls: terminate it.

        Only runs on this demo's own task queue (nobody else's run of the same id), the latest
        first (the sweep before the escalation it may be starting); terminating an escalation
        terminates its postmortem child too."""
        from temporalio.client import WorkflowExecutionStatus
        from temporalio.service import RPCError, RPCStatusCode

        for workflow_id in reversed(self.cleanup_ids):
            handle = self.client.get_workflow_handle(workflow_id)
            try:
                description = await handle.describe()
                if (description.status == WorkflowExecutionStatus.RUNNING
                        and description.task_queue == self.task_queue):
                    await handle.terminate(reason="escalations demo stopped before the end")
                    self.console.print(f"terminated {workflow_id} (the demo stopped before the end)")
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:  # never started: nothing to clean up
                    self.console.print(f"[yellow]could not terminate {workflow_id}: {escape(str(exc))}[/]")
            except Exception as exc:  # noqa: BLE001 - reported; the original error is what matters
                self.console.print(f"[yellow]could not terminate {workflow_id}: {escape(str(exc))}[/]")

    async def _story(self) -> None:

        from schemas.escalation import (
            AddNoteCommand,
            CompletePostmortemCommand,
            PostmortemStatus,
            ResolveCommand,
            postmortem_id_for,
        )

        request = self.request
        policy = self.policy
        p1 = policy.priorities["P1"]
        entry = p1.entry_level
        entry_ack = policy.responder(entry).ack_within.total_seconds()

        # 1 -------------------------------------------------------------------
        await self.begin("Initial contact",
                         "Our data stopped syncing yesterday. This is critical—we have a board meeting tomorrow!")
        self.happened(
            f"{request.customer.name} ({request.customer.segment}, {request.impact.users_affected} users) "
            f"reports: [bold]{escape(request.title)}[/] — integration {request.handoff.integration_id}"
        )

        # 2 -------------------------------------------------------------------
        await self.begin("First response & logging")
        self.happened("Tier 1 confirms it from the sync history and error logs: critical impact, "
                      "high-value client, complex integration → escalation criteria met")
        self.cleanup_ids.append(self.workflow_id)
        try:
            self.handle = await start_escalation(self.client, request, task_queue=self.task_queue, source=None)
        except EscalationAlreadyOpen:
            raise DemoError(f"{self.workflow_id} is already running; pick another --ticket") from None
        state = await self.until(lambda s: True, "opening the escalation")
        self.escalation_id = state.escalation_id
        self.happened(
            f"Tier 1 opens [bold]{request.priority}[/] escalation [bold]{request.ticket_id}[/] with the handoff: "
            "ticket history, error logs, integration id sf-prod-7, steps to reproduce "
            f"(workflow {self.workflow_id}, trigger {request.trigger.source})"
        )
        link = ui_link(self.connection, self.workflow_id)
        if link:
            self.progress.console.print(f"    Temporal UI: {link}", soft_wrap=True, markup=False)
        else:
            self.say("    Temporal UI: address unknown (run `escalations dev`, or set ESCALATION_UI_URL)")
        self.happened(
            f"The demo policy routes a P1 to [bold]{escape(policy.responder_name(entry))}[/]; "
            f"as a priority escalation it pages {', '.join(escape(policy.responder_name(lvl)) for lvl in state.paged_levels[1:]) or 'nobody else'} "
            "at the same time"
        )
        self.state_line(state)
        await self.messages("opened")

        # 3 -------------------------------------------------------------------
        await self.begin("Escalation to Tier 2 / Engineering")
        self.happened(
            f"{escape(policy.responder_name(entry))} must acknowledge within {entry_ack:.0f} s "
            f"(≈ {scaled(entry_ack)}); nobody does — the durable timer decides, no human involved"
        )
        state = await self.until(
            lambda s: any(p.auto and p.from_level == entry for p in s.path),
            f"waiting for the {entry} acknowledgement deadline",
            timeout=entry_ack + self.options.timeout,
            countdown=lambda s: s.deadlines.ack_due,
        )
        move = next(p for p in state.path if p.auto and p.from_level == entry)
        self.happened(
            f"Auto-escalated [bold]{move.from_level} → {move.to_level}[/] (auto: {str(move.auto).lower()}) "
            f"at {move.at:%H:%M:%S} UTC: {escape(move.reason)}"
        )
        state = await self.until(lambda s: s.jira_key is not None, "waiting for the Jira issue")
        issue = self.jira.issues.get(state.jira_key)
        labels = ", ".join(issue.labels) if issue else "—"
        self.happened(
            f"Ticket moved to Jira: [bold]{state.jira_key}[/] "
            f"“{escape(issue.summary if issue else '')}” (labels: {escape(labels)}; "
            "the description carries the handoff)"
        )
        self.state_line(state)
        await self.messages("escalated")

        # 4 -------------------------------------------------------------------
        await self.begin("Customer communication")
        state = await self.acknowledge_from_the_page()
        self.happened(f"Engineering acknowledges: {escape(state.acknowledged_by or '')} owns it now "
                      f"(via {escape(state.acknowledged_via or '—')}); the acknowledgement clock stops")
        self.state_line(state)
        await self.pause()
        cadence = p1.customer_update_every.total_seconds()
        state = await self.update("add_note", AddNoteCommand(
            author="Alex Chen (Engineering)",
            text="Our engineering team is investigating the issue. "
                 f"We'll update you every {scaled(cadence).replace(' h', ' hours')} until resolved.",
            customer_visible=True,
        ))
        self.happened(f"The customer is told; a customer-visible note restarts the {cadence:.0f} s "
                      f"(≈ {scaled(cadence)}) update cadence")
        self.state_line(state)
        await self.messages("note_added")

        # 5 -------------------------------------------------------------------
        await self.begin("Root cause identified")
        state = await self.update("add_note", AddNoteCommand(
            author="Alex Chen (Engineering)",
            text="Root cause: a recent Salesforce API schema change renamed Account.AccountRegion__c, "
                 "which broke our sync mapping for sf-prod-7.",
        ))
        self.happened("Engineering finds it: a recent [bold]Salesforce API schema change[/] (a renamed "
                      "Account field) broke the sync logic (internal note)")
        await self.pause()
        state = await self.update("add_note", AddNoteCommand(
            author="Alex Chen (Engineering)",
            text="Hotfix deployed: the sync mapping reads the renamed field; sf-prod-7 re-synced.",
        ))
        left = state.resolve_remaining.total_seconds() if state.resolve_remaining else 0
        self.happened(f"Hotfix deployed with {left:.0f} s (≈ {scaled(left)}) of the "
                      f"{scaled(p1.resolve_within.total_seconds())} resolution SLA left")
        self.state_line(state)

        # 6 -------------------------------------------------------------------
        await self.begin("Resolution & follow-up")
        state = await self.update("resolve", ResolveCommand(
            by="Alex Chen (Engineering)",
            root_cause="Salesforce changed the schema of its API: the Account field AccountRegion__c was "
                       "renamed, so our sync mapping for sf-prod-7 failed.",
            mitigation="Hotfix deployed: the mapping uses the new field, and the failed syncs were replayed.",
            preventive_actions=["Monitor added for schema changes in the Salesforce API"],
        ))
        self.happened(f"Resolved by {escape(state.resolution.by if state.resolution else '')}: root cause, "
                      "mitigation and preventive action go to the customer with a CSAT request; "
                      "the postmortem task starts as a child workflow")
        postmortem = state.postmortem
        assert postmortem is not None, "a resolved escalation has a postmortem task"
        self.say(f"    [dim]state:[/] status [bold]{state.status}[/] · SLA "
                 f"{'[red]breached[/]' if state.sla_breached else 'met'} · postmortem "
                 f"{postmortem.workflow_id} owned by {escape(postmortem.owner)}, due {postmortem.due:%H:%M:%S} UTC")
        await self.messages("postmortem_started")

        # 7 -------------------------------------------------------------------
        await self.begin("Postmortem & improvement")
        review = self.client.get_workflow_handle(postmortem_id_for(request.ticket_id))
        await review.execute_update(
            "complete",
            self.as_caller(CompletePostmortemCommand(
                by="Alex Chen (Engineering)",
                summary="P1 Salesforce sync outage for Acme Corp, fixed by a hotfix within the SLA.",
                root_cause="Unannounced Salesforce API schema change (renamed Account field).",
                improvements=[
                    "Better change alerts on third-party APIs",
                    "Update monitoring rules",
                    "Add this case to the internal knowledge base",
                ],
                kb_article_url=KB_URL,
            )),
            result_type=PostmortemStatus,
        )
        state = await self.until(lambda s: s.status == "closed", "waiting for the escalation to close")
        done = state.postmortem
        self.happened("Internal review done: " + "; ".join(escape(i) for i in (done.improvements if done else [])))
        self.happened(f"Knowledge-base entry: {done.kb_article_url if done else '—'}")
        self.say(f"    [dim]state:[/] status [bold]{state.status}[/] · level {escape(state.level_name)} · "
                 "no deadlines left")

        # 8 -------------------------------------------------------------------
        await self.begin("Auto-escalation with no human action")
        await self._auto_escalation()
        self.progress.advance(self.task)

    def _sweep_ticket(self) -> Any:
        """A P3 ticket nobody escalated, as a help desk would send it (POST /tickets)."""
        from schemas.ticket import Ticket

        now = datetime.now(UTC)
        return Ticket.model_validate({
            "id": self.sweep_ticket_id,
            "customer": {"id": "globex", "name": "Globex Corporation", "segment": "mid-market",
                         "timezone": "Europe/London"},
            "subject": "Dashboard export failing for the whole finance team",
            "status": "open",
            "opened_at": now,
            "updated_at": now,
            "category": "technical",
            "priority": "P3",
            "users_affected": 40,
            "interactions": 1,
            "integration_id": "exports",
            "description": "1. Dashboards > Finance > Month-end  2. Export > CSV  3. The export fails with "
                           "'Export timed out' for every member of the finance team (40 users)",
            "history": "Globex's finance lead wrote in: nobody in the team can export the month-end "
                       "dashboard. Tier 1 logged it as a routine P3 and has not escalated it.",
            "tags": ["exports", "escalations-demo"],
        })

    async def _auto_escalation(self) -> None:
        """Step 8: a ticket only stored, a criteria sweep, the escalation it opened, closed again."""
        from escalations.db.tickets import upsert_tickets
        from schemas import keys
        from schemas.escalation import (
            AcknowledgeCommand,
            CompletePostmortemCommand,
            EscalationState,
            PostmortemStatus,
            ResolveCommand,
            postmortem_id_for,
            workflow_id_for,
        )
        from schemas.ticket import SweepInput, SweepResult

        policy = self.policy
        criteria = policy.criteria
        if criteria is None or not criteria.rules:
            raise DemoError(f"policy {policy.name} v{policy.version} has no criteria rules: nothing to sweep")
        ticket = self._sweep_ticket()
        swept_id = workflow_id_for(ticket.id)
        # The sweep scans the table in a moment: everything it may start is cleaned up on failure.
        self.cleanup_ids += [swept_id, self.sweep_id]
        [stored] = await upsert_tickets(self.pool, [ticket], source="demo")
        self.happened(
            f"{escape(ticket.customer.name)} files [bold]{ticket.id}[/]: [bold]{escape(ticket.subject)}[/] — "
            f"{ticket.users_affected} users affected, filed as {ticket.priority} ({ticket.category}); "
            f"nobody escalates it (stored in the tickets table: {stored.outcome}, like POST /tickets)"
        )
        from escalations.schedules import installed_sweep

        # What the stack runs, as Temporal holds it: the demo's policy file says nothing about that.
        self.happened(
            "The criteria sweep checks open tickets against the rules, first match wins: "
            + "; ".join(escape(_rule_text(rule)) for rule in criteria.rules)
            + ". " + escape(sweep_sentence(await installed_sweep(self.client)))
        )
        self.status("the criteria sweep runs")
        # Only the demo's ticket: a sweep of the whole table would escalate other people's
        # tickets onto this demo's temporary task queue.
        result: SweepResult = await self.client.execute_workflow(
            keys.SWEEP_WORKFLOW,
            SweepInput(policy=policy.name, ticket_ids=[ticket.id]),
            id=self.sweep_id,
            task_queue=self.task_queue,
            result_type=SweepResult,
            execution_timeout=timedelta(seconds=self.options.timeout),
            static_summary=f"Demo criteria sweep · policy {policy.name} v{policy.version} · only {ticket.id}",
        )
        skipped = "; ".join(f"{s.ticket_id} {s.reason.replace('_', ' ')}" + (f": {s.message}" if s.message else "")
                            for s in result.skipped_tickets)
        self.happened(
            f"One CriteriaSweepWorkflow run ({self.sweep_id}, only {ticket.id}): checked [bold]{result.checked}[/] · "
            f"matched [bold]{result.matched}[/] · started [bold]{result.started}[/] · skipped [bold]{result.skipped}[/]"
            + (f" ({escape(skipped)})" if skipped else "")
        )
        link = ui_link(self.connection, self.sweep_id)
        if link:
            self.progress.console.print(f"    Temporal UI: {link}", soft_wrap=True, markup=False)
        if not any(s.ticket_id == ticket.id for s in result.started_tickets):
            raise DemoError(
                f"the sweep did not escalate {ticket.id}"
                + (f" ({skipped})" if skipped else " (no rule matched)")
                + "; if another sweep (the stack's schedule) got there first, run the demo again"
            )

        run = self.client.get_workflow_handle(swept_id, result_type=EscalationState)
        state = await self.until(lambda s: True, "opening the swept escalation", run=run)
        trigger = state.trigger
        self.happened(
            f"The sweep opened [bold]{state.priority}[/] escalation [bold]{state.workflow_id}[/] on its own: "
            f"trigger source [bold]{trigger.source}[/] · criterion [bold]{escape(trigger.criterion or '—')}[/] · "
            f"“{escape(trigger.detail or '')}” (a {state.kind} escalation; the ticket was filed as {ticket.priority})"
        )
        link = ui_link(self.connection, state.workflow_id)
        if link:
            self.progress.console.print(f"    Temporal UI: {link}", soft_wrap=True, markup=False)
        self.state_line(state)
        await self.messages("opened", escalation_id=state.escalation_id)

        await self.pause()
        responder = f"Priya Nair ({policy.responder_name(state.level)})"
        state = await self.update("acknowledge", AcknowledgeCommand(by=responder), run=run)
        self.happened(f"{escape(state.acknowledged_by or '')} acknowledges it: the first human action, "
                      "after the escalation was already open and paged")
        state = await self.update("resolve", ResolveCommand(
            by=responder,
            root_cause="Exports over 50,000 rows hit the export worker's 30 s time-out since this morning's release.",
            mitigation="Time-out raised and the export streamed in chunks; the finance team exported again.",
            preventive_actions=["Load test exports with month-end data sizes before each release"],
        ), run=run)
        postmortem = state.postmortem
        assert postmortem is not None, "a resolved escalation has a postmortem task"
        await self.client.get_workflow_handle(postmortem_id_for(ticket.id)).execute_update(
            "complete",
            self.as_caller(CompletePostmortemCommand(
                by=responder,
                summary=f"P3 ticket auto-escalated to P1 by the sweep ({trigger.detail}); fixed the same day.",
                root_cause="Export time-out too short for month-end data volumes.",
                improvements=["Alert when export failures spike for one customer"],
            )),
            result_type=PostmortemStatus,
        )
        self.swept = await asyncio.wait_for(run.result(), self.options.timeout)
        self.happened(
            f"Resolved ({escape(state.resolution.root_cause if state.resolution else '')}); postmortem "
            f"{postmortem.workflow_id} completed — escalation {self.swept.workflow_id} is [bold]{self.swept.status}[/]"
        )
        self.say(f"    [dim]state:[/] status [bold]{self.swept.status}[/] · level {escape(self.swept.level_name)} · "
                 f"trigger {self.swept.trigger.source}: {escape(self.swept.trigger.detail or '')} · "
                 f"nothing left on task queue {self.task_queue}")

    def _summary(self, state: Any) -> None:
        elapsed = time.monotonic() - self.started
        path = " → ".join([state.route, *(p.to_level for p in state.path if p.to_level != p.from_level)])
        table = Table(title=f"Escalation {state.ticket_id} is {state.status}", show_header=False,
                      title_style="bold green")
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        resolved = (state.resolved_at - state.opened_at).total_seconds() if state.resolved_at else 0
        rows = [
            ("customer", f"{state.customer.name} ({state.customer.id})"),
            ("path", path + f"  ({state.counts.auto_escalations} automatic, "
                             f"{state.counts.manual_escalations} manual)"),
            ("Jira", state.jira_key or "—"),
            ("resolved in", f"{resolved:.0f} s ≈ {scaled(resolved)} · SLA "
                            + ("breached" if state.sla_breached else "met")),
            ("notifications", f"{state.notifications_sent} sent, {state.notifications_failed} failed"),
            ("events", str(state.last_seq)),
            ("postmortem", state.postmortem.kb_article_url or "—" if state.postmortem else "—"),
            ("workflow", f"{state.workflow_id} (escalation id {state.escalation_id})"),
        ]
        if self.swept is not None:
            swept = self.swept
            rows.append(("auto-escalated", f"{swept.ticket_id} ({swept.customer.name}) by the criteria sweep "
                                           f"{self.sweep_id}: {swept.trigger.detail} → {swept.priority} "
                                           f"{swept.workflow_id}, {swept.status}"))
        for key, value in rows:
            table.add_row(key, escape(value))
        self.console.print()
        self.console.print(table)
        link = ui_link(self.connection, self.workflow_id)
        if link and self.connection.ui_url:
            listing = workflows_url(self.connection.ui_url, self.connection.namespace,
                                    escalations_query('CustomerId="acme"'))
            self.console.print(f"Temporal UI, this run: {link}", soft_wrap=True, markup=False)
            self.console.print(f"Temporal UI, Acme's escalations: {listing}", soft_wrap=True, markup=False)
        self.console.print(f"Finished in {elapsed:.0f} s (≈ {scaled(elapsed)} of escalation time at {SCALE_LABEL}).")
