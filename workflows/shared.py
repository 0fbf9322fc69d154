"""One copy per worker process of what many runs pin alike: their policies.

Invariant: a shared value is immutable and found by its content (name, version and the
digest of its canonical JSON), so a run gets a value equal to the one its own history
decoded, whichever run put it in the table first. Sharing changes memory, never a
decision: a replay on another worker, with an empty table, decides the same.

Every run used to hold its own copy of its policy (16 KB for a small one, more than 30 KB
for ``default.yaml``), decoded from its ``pin_policy`` result or its continue-as-new
input; with 10,000 runs cached that was most of the worker's memory above the bare
baseline (docs/benchmarks.md). Workflow modules import this one passed through the
sandbox, so every run in the process sees the same table; entries go with the last run
that refers to them.
"""

from __future__ import annotations

import threading
import weakref

from schemas.policy import Policy, policy_digest

# Workflow activations run on several threads at once (max_concurrent_workflow_tasks).
_lock = threading.Lock()
_policies: weakref.WeakValueDictionary[tuple[str, int, str], Policy] = weakref.WeakValueDictionary()


def policy(value: Policy, digest: str | None = None) -> Policy:
    """The process's copy of ``value`` (``value`` itself if it is the first).

    ``digest`` is ``policy_digest(value)`` when the caller has it (``pin_policy`` returns it);
    otherwise it is computed here. ``Policy`` is frozen and no transition changes it, which is
    what makes handing one object to many runs safe.
    """
    key = (value.name, value.version, digest or policy_digest(value))
    with _lock:
        found = _policies.get(key)
        if found is None:
            _policies[key] = value
            return value
        return found


def policies_held() -> set[tuple[str, int, str]]:
    """(name, version, digest) of every policy the table holds now (for tests and diagnostics)."""
    with _lock:
        return set(_policies.keys())
