"""Runs on the same policy share one copy of it in the worker (workflows/shared.py)."""

from __future__ import annotations

import gc
import uuid

import pytest
from pydantic import ValidationError

import workflows.shared as shared
from schemas.policy import load_policy_file, load_policy_text, policy_digest
from tests.helpers.escalations import current_state, start_escalation
from tests.helpers.policies import policy_path, write_policy
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request
from workflows.clocks import RunState


def test_equal_policies_decoded_apart_become_one_object(tmp_path):
    # A name of its own: runs of other tests in this process may hold a shared "fast".
    text = write_policy(tmp_path, name=f"apart-{uuid.uuid4().hex[:8]}").read_text()
    first, second = load_policy_text(text), load_policy_text(text)
    assert first is not second and first == second
    assert shared.policy(first) is first
    assert shared.policy(second) is first
    assert shared.policy(second, policy_digest(second)) is first


def test_same_name_and_version_with_other_content_stay_apart(tmp_path):
    fast = load_policy_file(policy_path("fast"))
    changed = load_policy_file(write_policy(tmp_path, priorities={"P1": {"resolve_within": "9s"}}))
    assert (changed.name, changed.version) == (fast.name, fast.version)
    assert shared.policy(changed) is not shared.policy(fast)
    assert shared.policy(changed).targets("P1").resolve_within != shared.policy(fast).targets("P1").resolve_within


def test_a_shared_policy_cannot_be_changed_and_goes_with_its_last_run(tmp_path):
    policy = shared.policy(load_policy_file(write_policy(tmp_path, name=f"gone-{uuid.uuid4().hex[:8]}")))
    with pytest.raises(ValidationError):
        policy.version = 2  # frozen: what makes handing one object to many runs safe
    key = (policy.name, policy.version, policy_digest(policy))
    assert key in shared.policies_held()
    del policy
    gc.collect()
    assert key not in shared.policies_held()


async def test_runs_opened_on_one_policy_hold_one_copy(client, task_queue, start_worker):
    tickets = [f"SHARE-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    async with start_worker("fast"):
        handles = [await start_escalation(client, blog_request(ticket), task_queue) for ticket in tickets]
        for handle in handles:
            await eventually(lambda handle=handle: current_state(handle))
        gc.collect()
        states = [o for o in gc.get_objects() if isinstance(o, RunState) and o.view.ticket_id in tickets]
        assert {s.view.ticket_id for s in states} == set(tickets)
        assert len({id(s.policy) for s in states}) == 1, "each run decoded and kept its own copy of the policy"
