"""The dev stack's generated secrets, kept in ``DIR/secrets.json`` (mode 600) across restarts.

API tokens (admin and read), webhook secret and the embedded PostgreSQL's password are generated on first use
and kept, so a restarted stack (and the clients that read ``stack.json``) keeps working. The
file is only ever written whole, created private (see ``escalations.connect.write_private``),
under a lock so two start-ups on one data dir generate each secret once.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from escalations.codec import new_key_entry
from escalations.connect import write_private

SECRETS_FILE = "secrets.json"

GENERATORS: dict[str, Callable[[], str]] = {
    "api_token": lambda: secrets.token_urlsafe(24),
    "api_read_token": lambda: secrets.token_urlsafe(24),
    "webhook_secret": lambda: secrets.token_hex(32),
    # The payload codec's key (``id:base64``): kept, since the stack's histories need it.
    "encryption_keys": lambda: new_key_entry("dev"),
    # Hex: safe in a URL and in SQL without quoting.
    "postgres_password": lambda: secrets.token_hex(24),
}


def keep(data_dir: Path, *names: str) -> dict[str, str]:
    """The named secrets of ``data_dir``, generating (and keeping) the missing ones."""
    unknown = set(names) - set(GENERATORS)
    if unknown:
        raise ValueError(f"no generator for secret(s) {sorted(unknown)}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / SECRETS_FILE
    lock = os.open(data_dir / f".{SECRETS_FILE}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kept: dict[str, str] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        missing = [name for name in names if name not in kept]
        for name in missing:
            kept[name] = GENERATORS[name]()
        # Rewritten (created anew, mode 600) when a secret was added or an older version
        # left the file readable by others.
        if missing or stat.S_IMODE(path.stat().st_mode) & 0o077:
            write_private(path, json.dumps(kept, indent=2) + "\n")
    finally:
        os.close(lock)
    return {name: kept[name] for name in names}
