"""Leaving a process that used temporalio: flush, then exit without interpreter finalization.

temporalio's Rust runtime threads can abort CPython's finalization at random
("PyGILState_Release: thread state must be current", temporalio/sdk-python#300), which would
turn a finished command or a green test run into exit code 134.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
