"""Waiting for something to happen: poll with a deadline, never sleep a fixed time.

A test that needs a state polls for it (``eventually``) and fails at the deadline with the
last assertion's message. A test that asserts something does *not* happen over a period
waits (by polling) for an observable later point that proves the period passed, such as the
workflow acting on a later deadline of another clock, and then checks nothing else happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.client import WorkflowQueryFailedError

T = TypeVar("T")

RETRY_ON: tuple[type[BaseException], ...] = (AssertionError, WorkflowQueryFailedError)
"""Failures that mean "not yet": a failed assertion, or a run that cannot answer a query yet."""


async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = RETRY_ON,
    what: str | None = None,
) -> T:
    """Poll ``check`` until it returns without raising one of ``retry_on``; fail at the deadline.

    At the deadline the last failure is raised as it is, or, with ``what``, as an
    AssertionError saying what did not happen in time (the last failure chained).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except retry_on as failure:
            if time.monotonic() >= deadline:
                if what is None:
                    raise
                raise AssertionError(f"{what}: not within {timeout:g}s ({failure!r})") from failure
        await asyncio.sleep(interval)
