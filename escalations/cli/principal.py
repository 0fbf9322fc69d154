"""Who runs a command of the ``escalations`` CLI: ``cli:<os user>``, recorded as ``via``."""

from __future__ import annotations

import getpass
import os


def cli_principal() -> str:
    """``cli:<login name>`` (``cli:uid-<n>`` where the system has no name for the user)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no USER/LOGNAME and no passwd entry (a bare container)
        user = f"uid-{os.getuid()}"
    return f"cli:{user}"[:200]
