"""Yesterday's runs must replay on today's code: checked-in histories against the workflows.

A failure here means a change would break escalations already running in production;
put the new behaviour behind ``workflow.patched(...)`` instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.escalation import EscalationWorkflow
from workflows.postmortem import PostmortemWorkflow
from workflows.sweep import CriteriaSweepWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_checked_in():
    names = {path.stem for path in HISTORIES}
    assert {"escalation-blog-lifecycle", "postmortem-blog-lifecycle", "escalation-breach-and-climb",
            "escalation-continue-as-new", "sweep"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path):
    replayer = Replayer(
        workflows=[EscalationWorkflow, PostmortemWorkflow, CriteriaSweepWorkflow],
        data_converter=pydantic_data_converter,
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer.replay_workflow(history)
