"""Finding the stack from a command: the environment first, then ``DIR/stack.json``.

``escalations dev`` writes ``stack.json``; production sets the standard
``TEMPORAL_*`` variables and ``DATABASE_URL``. Read when a command runs, never at import.
The payload keys come the same way: ``ESCALATION_ENCRYPTION_KEYS`` (or ``…_FILE``), else
the dev stack's ``encryption_keys`` in stack.json.

Which ``DIR``: ``--data-dir``, else ``ESCALATION_DATA_DIR``, else ``.data`` when a stack runs
there, else the data dir ``escalations dev`` last started in (remembered under
``$XDG_STATE_HOME/escalations/``) while its stack runs, else ``.data``
(``choose_data_dir``).

Temporal's client is imported only by the functions that connect: ``escalations --help`` and
``--version`` load none of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError

from escalations.settings import CliSettings, CodecSettings
from schemas.keys import DEFAULT_TASK_QUEUE

if TYPE_CHECKING:
    from temporalio.client import Client

DEFAULT_DATA_DIR = Path(".data")
DATA_DIR_VARIABLE = "ESCALATION_DATA_DIR"
HOW_TO_POINT = f"--data-dir DIR or {DATA_DIR_VARIABLE}"
"""How a user points a command at a stack: the flag and the variable, named in every message."""
REMEMBERED_FILE = "last-stack.json"


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
    action_key: str | None = Field(default=None, description="signs and verifies action links (ESCALATION_ACTION_KEY)")
    public_url: str | None = Field(default=None, description="where action links point (ESCALATION_PUBLIC_URL)")
    slack_signing_secret: str | None = Field(
        default=None, description="what POST /integrations/slack/interactions verifies Slack's requests with")
    encryption_keys: str | None = None  # ESCALATION_ENCRYPTION_KEYS of the stack's processes
    task_queue: str = DEFAULT_TASK_QUEUE
    policy_file: str | None = None
    pid: int | None = None
    metrics_urls: dict[str, str] | None = None
    """Prometheus scrape targets: ``{"api": …/metrics, "worker": …/metrics}``."""


class StackNotFound(RuntimeError):
    """Neither the environment nor a stack.json says where the stack is (or stack.json is unreadable)."""


def stack_file(data_dir: Path) -> Path:
    return Path(data_dir) / "stack.json"


def read_stack(data_dir: Path) -> StackInfo | None:
    path = stack_file(data_dir)
    if not path.exists():
        return None
    try:
        return StackInfo.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:  # ValidationError and JSONDecodeError are ValueErrors
        reason = err.strerror if isinstance(err, OSError) else (
            f"{err.error_count()} invalid field(s)" if isinstance(err, ValidationError) else "not JSON")
        raise StackNotFound(f"cannot use {path}: {reason} (written by `escalations dev`; "
                            "restart it to write it again)") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def stack_running(data_dir: Path) -> bool:
    """A stack.json in ``data_dir`` whose ``escalations dev`` process is alive (a killed stack
    leaves its stack.json behind; the next one removes it)."""
    try:
        stack = read_stack(data_dir)
    except StackNotFound:
        return False
    return stack is not None and (stack.pid is None or _alive(stack.pid))


# -- which data dir -------------------------------------------------------------------


DataDirSource = Literal["flag", "environment", "default", "remembered"]


@dataclass(frozen=True)
class ChosenDataDir:
    path: Path
    source: DataDirSource

    @property
    def note(self) -> str | None:
        """What a command says on stderr when the user named no data dir and it is not ``.data``."""
        if self.source != "remembered":
            return None
        return (f"using the stack in {self.path} (the last one `escalations dev` started; "
                f"{HOW_TO_POINT} chooses another)")


def remember_data_dir(state_dir: Path, data_dir: Path, pid: int) -> Path:
    """Record ``data_dir`` as the last one ``escalations dev`` started in (``pid``: its process)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = {"data_dir": str(Path(data_dir).resolve()), "pid": pid,
              "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    return write_private(state_dir / REMEMBERED_FILE, json.dumps(record, indent=2) + "\n")


def remembered_data_dir(state_dir: Path) -> Path | None:
    """The data dir ``escalations dev`` last started in, or None (nothing recorded, or a record
    this version cannot read: it is only a convenience, and the next ``dev`` rewrites it)."""
    try:
        record = json.loads((state_dir / REMEMBERED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or unreadable: nothing remembered
        return None
    value = record.get("data_dir") if isinstance(record, dict) else None
    return Path(value) if isinstance(value, str) and value else None


def choose_data_dir(flag: Path | None, settings: CliSettings) -> ChosenDataDir:
    """``--data-dir``, ``ESCALATION_DATA_DIR``, ``.data`` when a stack runs there, the remembered
    data dir while its stack runs, else ``.data``."""
    if flag is not None:
        return ChosenDataDir(Path(flag), "flag")
    if settings.data_dir is not None:
        return ChosenDataDir(settings.data_dir, "environment")
    if stack_running(DEFAULT_DATA_DIR):
        return ChosenDataDir(DEFAULT_DATA_DIR, "default")
    remembered = remembered_data_dir(settings.state_dir)
    if remembered is not None and remembered != DEFAULT_DATA_DIR.resolve() and stack_running(remembered):
        return ChosenDataDir(remembered, "remembered")
    return ChosenDataDir(DEFAULT_DATA_DIR, "default")


# -- stack.json ---------------------------------------------------------------------


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


# -- connecting ---------------------------------------------------------------------


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
    action_key: str | None = None
    public_url: str | None = None
    codec: CodecSettings
    data_dir: str = str(DEFAULT_DATA_DIR)
    stack_found: bool = False
    """A stack.json was read from ``data_dir``."""
    temporal_from: Literal["environment", "stack", "default"] = "default"

    def no_stack_hint(self) -> str:
        """When Temporal's address is the built-in default (no variable, no stack.json): how to
        point the command at a stack."""
        if self.temporal_from != "default":
            return ""
        return (f" (no stack.json in {self.data_dir}: start `escalations dev`, or point to its data dir "
                f"with {HOW_TO_POINT}, or set TEMPORAL_ADDRESS)")


def resolve(data_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> Connection:
    from temporalio.envconfig import ClientConfig

    environ = os.environ if environ is None else environ
    folder = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    stack = read_stack(folder)
    config = dict(ClientConfig.load_client_connect_config(override_env_vars=dict(environ)))
    temporal_from: Literal["environment", "stack", "default"] = "environment"
    if "target_host" not in config:
        config["target_host"] = stack.temporal_address if stack else "localhost:7233"
        temporal_from = "stack" if stack else "default"
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
        action_key=environ.get("ESCALATION_ACTION_KEY") or (stack.action_key if stack else None),
        public_url=environ.get("ESCALATION_PUBLIC_URL") or (stack.public_url if stack else None),
        codec=codec,
        data_dir=str(folder),
        stack_found=stack is not None,
        temporal_from=temporal_from,
    )


async def temporal_client(connection: Connection) -> Client:
    from escalations import temporal

    return await temporal.connect(connection.temporal, connection.codec)


def require_database(connection: Connection) -> str:
    if not connection.database_url:
        raise StackNotFound(
            f"no database: set DATABASE_URL, or run `escalations dev` and point to its data dir with "
            f"{HOW_TO_POINT} (no stack.json in {connection.data_dir})"
        )
    return connection.database_url
