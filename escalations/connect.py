"""Finding the stack from a command: the environment first, then ``DIR/stack.json``.

``escalations dev`` writes ``stack.json``; production sets the standard
``TEMPORAL_*`` variables and ``DATABASE_URL``. Read when a command runs, never at import.
The payload keys come the same way: ``ESCALATION_ENCRYPTION_KEYS`` (or ``…_FILE``), else
the dev stack's ``encryption_keys`` in stack.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from temporalio.client import Client
from temporalio.envconfig import ClientConfig

from escalations import temporal
from escalations.settings import CodecSettings
from schemas.keys import DEFAULT_TASK_QUEUE

DEFAULT_DATA_DIR = Path(".data")


class StackInfo(BaseModel):
    """What ``escalations dev`` writes to ``DIR/stack.json`` once it is ready."""

    temporal_address: str
    namespace: str = "default"
    ui_url: str | None = None
    api_url: str | None = None
    database_url: str
    api_token: str | None = Field(default=None, description="admin: every scope (operators, the walk-through)")
    api_read_token: str | None = Field(default=None, description="scope read only (dashboards, read-only tools)")
    webhook_secret: str | None = None
    encryption_keys: str | None = None  # ESCALATION_ENCRYPTION_KEYS of the stack's processes
    task_queue: str = DEFAULT_TASK_QUEUE
    policy_file: str | None = None
    pid: int | None = None
    metrics_urls: dict[str, str] | None = None
    """Prometheus scrape targets: ``{"api": …/metrics, "worker": …/metrics}``."""


class StackNotFound(RuntimeError):
    """Neither the environment nor a stack.json says where the stack is."""


def stack_file(data_dir: Path) -> Path:
    return Path(data_dir) / "stack.json"


def read_stack(data_dir: Path) -> StackInfo | None:
    path = stack_file(data_dir)
    if not path.exists():
        return None
    return StackInfo.model_validate(json.loads(path.read_text(encoding="utf-8")))


def write_private(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text``, readable by its owner only from the first byte.

    The new content goes to a fresh file created with mode 600 (``O_EXCL``: never one someone
    else prepared) and is renamed over ``path``, so no reader sees a partial file and no
    other user ever sees it at all (a chmod after writing leaves a window).
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def write_stack(data_dir: Path, info: StackInfo) -> Path:
    return write_private(stack_file(data_dir), info.model_dump_json(indent=2) + "\n")


class Connection(BaseModel):
    """Where a command connects, after merging the environment over stack.json."""

    temporal: dict[str, object]
    database_url: str | None
    task_queue: str
    ui_url: str | None = None
    api_url: str | None = None
    api_token: str | None = None
    api_read_token: str | None = None
    namespace: str = "default"
    codec: CodecSettings


def resolve(data_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> Connection:
    environ = os.environ if environ is None else environ
    stack = read_stack(data_dir or DEFAULT_DATA_DIR)
    config = dict(ClientConfig.load_client_connect_config(override_env_vars=dict(environ)))
    if "target_host" not in config:
        config["target_host"] = stack.temporal_address if stack else "localhost:7233"
    if "namespace" not in config and stack is not None:
        config["namespace"] = stack.namespace
    codec = CodecSettings.from_env(environ)
    if not codec.encrypted and stack is not None and stack.encryption_keys:
        codec = codec.with_overrides(encryption_keys=SecretStr(stack.encryption_keys))
    return Connection(
        temporal=config,
        database_url=environ.get("DATABASE_URL") or (stack.database_url if stack else None),
        task_queue=environ.get("ESCALATION_TASK_QUEUE") or (stack.task_queue if stack else DEFAULT_TASK_QUEUE),
        ui_url=environ.get("ESCALATION_UI_URL") or (stack.ui_url if stack else None),
        api_url=stack.api_url if stack else None,
        api_token=stack.api_token if stack else None,
        api_read_token=stack.api_read_token if stack else None,
        namespace=str(config.get("namespace", "default")),
        codec=codec,
    )


async def temporal_client(connection: Connection) -> Client:
    return await temporal.connect(connection.temporal, connection.codec)


def require_database(connection: Connection) -> str:
    if not connection.database_url:
        raise StackNotFound(
            "no database: set DATABASE_URL or run `escalations dev` (it writes .data/stack.json)"
        )
    return connection.database_url
