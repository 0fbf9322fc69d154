"""Where things are: the repository root and the tests' data folders."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository (the working directory of every subprocess a test starts)."""

TESTS = ROOT / "tests"
POLICIES = TESTS / "policies"
HISTORIES = TESTS / "histories"
