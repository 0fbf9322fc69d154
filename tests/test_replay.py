"""Yesterday's runs must replay on today's code: checked-in histories against the workflows.

A failure here means a change would break escalations already running in production;
put the new behaviour behind ``workflow.patched(...)`` instead.

``histories/stuck/`` holds five runs of the released commit path recorded while PostgreSQL
was frozen and killed: they no longer replay with any code (a decision after a local
activity that outlived its task ran in another task on replay). They must keep failing:
that proves the check can catch a break. ``escalations repair`` resets such a run to the
last task it replays up to; the test checks that point exists for each of them (the live
repair is in tests/faults/test_clocks.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from escalations.repair import replays, reset_point
from escalations.temporal import data_converter
from tests.helpers import paths
from tests.helpers.codec import TEST_CODEC
from worker import build_replayer

HERE = paths.HISTORIES
HISTORIES = sorted(HERE.glob("*.json"))
STUCK = sorted((HERE / "stuck").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_histories_are_checked_in():
    names = {path.stem for path in HISTORIES}
    assert {"escalation-blog-lifecycle", "postmortem-blog-lifecycle", "escalation-breach-and-climb",
            "escalation-continue-as-new", "sweep", "escalation-commands", "escalation-failing-channels",
            "housekeeping-before-purge", "housekeeping-purge"} <= names
    assert len(STUCK) == 5


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path):
    await build_replayer(data_converter(TEST_CODEC)).replay_workflow(load(path))


@pytest.mark.parametrize("path", STUCK, ids=[p.stem for p in STUCK])
async def test_a_stuck_history_fails_and_has_a_reset_point(path: Path):
    replayer = build_replayer(data_converter(TEST_CODEC))
    history = load(path)
    reason = await replays(replayer, history)
    assert reason is not None and "Nondeterminism" in reason
    point = await reset_point(replayer, history)
    assert point.started_event_id == point.completed_event_id - 1
    assert point.completed_event_id < history.events[-1].event_id


def test_the_commit_path_of_a_history_is_recognised():
    from escalations.repair import released_path

    assert released_path(load(HERE / "escalation-blog-lifecycle.json"))
    assert not released_path(load(HERE / "history-first-escalation-blog-lifecycle.json"))
