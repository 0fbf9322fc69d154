"""The bare baseline: activity -> durable timer -> activity, nothing else.

It runs on the same server with the same worker settings as the escalation
workflow, so each scenario reports ratios (ours / bare) rather than absolute times.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import AwareDatetime, BaseModel

BARE_WORKFLOW = "BareWorkflow"
BARE_STEP = "bare_step"
STEP_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))


class BareInput(BaseModel):
    id: str
    deadline: AwareDatetime | None = None
    """When the timer is due; without it, ``delay_seconds`` after the first activity."""
    delay_seconds: float = 1.0


class BareStep(BaseModel):
    id: str
    step: int
    deadline: AwareDatetime | None = None


@workflow.defn(name=BARE_WORKFLOW)
class BareWorkflow:
    @workflow.run
    async def run(self, input: BareInput) -> None:
        await workflow.execute_activity(
            BARE_STEP, BareStep(id=input.id, step=1),
            start_to_close_timeout=timedelta(seconds=60), retry_policy=STEP_RETRY,
        )
        deadline: datetime = input.deadline or workflow.now() + timedelta(seconds=input.delay_seconds)
        delay = deadline - workflow.now()
        if delay > timedelta(0):
            await workflow.sleep(delay)
        await workflow.execute_activity(
            BARE_STEP, BareStep(id=input.id, step=2, deadline=deadline),
            start_to_close_timeout=timedelta(seconds=60), retry_policy=STEP_RETRY,
        )
