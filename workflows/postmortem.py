"""PostmortemWorkflow: the review task that closes an escalation.

Started by the escalation as a child. It keeps the due date and the reminder
cadence and takes the ``complete`` update; it writes no escalation events of its
own but reports reminders and overdue to its parent, which records them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from schemas.durations import format_duration
    from schemas.escalation import (
        CompletePostmortemCommand,
        PostmortemInput,
        PostmortemReport,
        PostmortemResult,
        PostmortemStatus,
    )


@workflow.defn(name="PostmortemWorkflow")
class PostmortemWorkflow:
    @workflow.init
    def __init__(self, task: PostmortemInput) -> None:
        self._task = task
        self._completion: CompletePostmortemCommand | None = None
        self._completed_at: datetime | None = None
        self._reminders = 0
        self._overdue = False

    @workflow.run
    async def run(self, task: PostmortemInput) -> PostmortemResult:
        parent = workflow.get_external_workflow_handle(task.parent_workflow_id)
        next_reminder = workflow.now() + task.remind_every
        while self._completion is None:
            wake = next_reminder if self._overdue else min(next_reminder, task.due)
            label = (
                f"postmortem due ({task.due:%Y-%m-%d %H:%M} UTC)"
                if not self._overdue and task.due <= next_reminder
                else f"postmortem reminder #{self._reminders + 1} ({format_duration(task.remind_every)})"
            )
            delay = wake - workflow.now()
            if delay > timedelta(0):
                try:
                    await workflow.wait_condition(
                        lambda: self._completion is not None, timeout=delay, timeout_summary=label
                    )
                    continue
                except TimeoutError:
                    pass
            now = workflow.now()
            if not self._overdue and now >= task.due:
                self._overdue = True
                await parent.signal("postmortem_report", PostmortemReport(kind="overdue", at=now))
            if now >= next_reminder:
                self._reminders += 1
                next_reminder += task.remind_every
                await parent.signal(
                    "postmortem_report",
                    PostmortemReport(kind="reminder", number=self._reminders, at=now),
                )
        await workflow.wait_condition(workflow.all_handlers_finished)
        done = self._completion
        assert self._completed_at is not None
        return PostmortemResult(
            completed_by=done.by,
            completed_via=done.via,
            completed_at=self._completed_at,
            summary=done.summary,
            root_cause=done.root_cause,
            improvements=list(done.improvements),
            kb_article_url=str(done.kb_article_url) if done.kb_article_url else None,
            reminders_sent=self._reminders,
            overdue=self._overdue,
        )

    @workflow.update(name="complete")
    def complete(self, command: CompletePostmortemCommand) -> PostmortemStatus:
        self._completion = command
        self._completed_at = workflow.now()
        return self.state()

    @complete.validator
    def _validate_complete(self, command: CompletePostmortemCommand) -> None:
        if self._completion is not None:
            raise ApplicationError(
                f"postmortem of {self._task.ticket_id} was already completed by {self._completion.by}",
                type="InvalidCommand",
                non_retryable=True,
            )

    @workflow.query(name="state")
    def state(self) -> PostmortemStatus:
        return PostmortemStatus(
            ticket_id=self._task.ticket_id,
            owner=self._task.owner,
            due=self._task.due,
            reminders_sent=self._reminders,
            overdue=self._overdue,
            completed=self._completion is not None,
        )
