"""The API's configuration, read once at start-up from the environment (plus overrides)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from temporalio.envconfig import ClientConfig

from schemas.keys import DEFAULT_TASK_QUEUE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MIB = 1024 * 1024


class ConfigError(RuntimeError):
    """A required setting is missing or invalid; the message names it."""


@dataclass(frozen=True)
class ApiSettings:
    """Everything the API process needs; ``create_app`` refuses to run with an unsafe set.

    ``temporal`` holds the keyword arguments of ``Client.connect`` (target_host,
    namespace, api_key, tls, ...) as ``temporalio.envconfig`` reads them from the
    standard ``TEMPORAL_*`` variables and profiles.
    """

    tokens: tuple[str, ...] = ()
    task_queue: str = DEFAULT_TASK_QUEUE
    database_url: str | None = None
    policy_file: str | None = None
    temporal: Mapping[str, Any] = field(default_factory=lambda: {"target_host": "localhost:7233"})
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_body_bytes: int = MIB
    ui_url: str | None = None

    # -- time bounds (seconds): during an outage every route answers 503/504 within these --------
    temporal_rpc_timeout: float = 5.0
    """A Temporal call Temporal answers itself (start, describe, list; connecting included):
    ``ESCALATION_API_TEMPORAL_TIMEOUT``. A frozen Temporal answers 504 after it."""
    command_timeout: float = 10.0
    """A query or update, which a worker must answer: ``ESCALATION_API_COMMAND_TIMEOUT``.
    With no worker polling, GET answers 503 and a command 504 after it (plus ``probe_timeout``)."""
    probe_timeout: float = 2.0
    """The describe made after a query/update timed out, telling "no worker" from "Temporal is stuck"."""
    postmortem_wait: float = 10.0
    """Seconds POST /postmortem waits for the escalation to close."""
    db_acquire_timeout: float = 3.0
    """Waiting for a PostgreSQL connection, connecting included: ``ESCALATION_API_DB_ACQUIRE_TIMEOUT``."""
    db_command_timeout: float = 5.0
    """One PostgreSQL statement: ``ESCALATION_API_DB_COMMAND_TIMEOUT``. A frozen PostgreSQL
    answers 504 after it (or after ``db_acquire_timeout`` when no connection is open)."""
    health_timeout: float = 2.0
    """``/healthz`` in total, both checks at once: ``ESCALATION_API_HEALTH_TIMEOUT``."""
    request_timeout: float = 30.0
    """Last-resort bound on any request (504 after it): ``ESCALATION_API_REQUEST_TIMEOUT``.
    The bounds above normally answer first; keep it above command_timeout + postmortem_wait."""
    retry_after: int = 5
    """``Retry-After`` (seconds) of a 503: ``ESCALATION_API_RETRY_AFTER``."""

    idempotency_ttl: timedelta = timedelta(hours=24)
    pool_size: int = 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> "ApiSettings":
        """Read ``ESCALATION_API_*``, ``ESCALATION_*``, ``DATABASE_URL`` and ``TEMPORAL_*``.

        Keyword overrides (field names) win over the environment, e.g. ``port=0``.
        """
        environ = dict(environ)
        temporal = dict(ClientConfig.load_client_connect_config(override_env_vars=environ))
        temporal.setdefault("target_host", "localhost:7233")
        values: dict[str, Any] = {
            "tokens": parse_tokens(environ.get("ESCALATION_API_TOKENS", "")),
            "task_queue": environ.get("ESCALATION_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            "database_url": environ.get("DATABASE_URL") or None,
            "policy_file": environ.get("ESCALATION_POLICY_FILE") or None,
            "temporal": temporal,
            "host": environ.get("ESCALATION_API_HOST") or DEFAULT_HOST,
            "port": _int(environ, "ESCALATION_API_PORT", DEFAULT_PORT),
            "max_body_bytes": _int(environ, "ESCALATION_API_MAX_BODY_BYTES", MIB),
            "ui_url": environ.get("ESCALATION_UI_URL") or None,
        }
        for name, key in TIMEOUT_VARIABLES.items():
            if environ.get(name):
                values[key] = _seconds(environ, name)
        if environ.get("ESCALATION_API_RETRY_AFTER"):
            values["retry_after"] = _int(environ, "ESCALATION_API_RETRY_AFTER", 5)
        values.update({key: value for key, value in overrides.items() if value is not None})
        if isinstance(values["tokens"], str):
            values["tokens"] = parse_tokens(values["tokens"])
        values["tokens"] = tuple(values["tokens"])
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> "ApiSettings":
        return replace(self, **{key: value for key, value in overrides.items() if value is not None})

    @property
    def namespace(self) -> str:
        return str(self.temporal.get("namespace") or "default")

    def check(self) -> None:
        """Refuse to serve without tokens (never open by accident) or without a database."""
        if not self.tokens:
            raise ConfigError(
                "ESCALATION_API_TOKENS is empty: the API refuses to start without bearer tokens "
                "(set one or more, comma-separated)"
            )
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (the dev stack sets it for you: `escalations dev`)")
        if self.max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be positive, got {self.max_body_bytes}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"ESCALATION_API_PORT must be a port number (0-65535), got {self.port}")
        for name, key in TIMEOUT_VARIABLES.items():
            if not getattr(self, key) > 0:
                raise ConfigError(f"{name} ({key}) must be a positive number of seconds, got {getattr(self, key)}")
        if self.retry_after < 1:
            raise ConfigError(f"ESCALATION_API_RETRY_AFTER must be at least 1 second, got {self.retry_after}")


TIMEOUT_VARIABLES = {
    "ESCALATION_API_TEMPORAL_TIMEOUT": "temporal_rpc_timeout",
    "ESCALATION_API_COMMAND_TIMEOUT": "command_timeout",
    "ESCALATION_API_PROBE_TIMEOUT": "probe_timeout",
    "ESCALATION_API_DB_ACQUIRE_TIMEOUT": "db_acquire_timeout",
    "ESCALATION_API_DB_COMMAND_TIMEOUT": "db_command_timeout",
    "ESCALATION_API_HEALTH_TIMEOUT": "health_timeout",
    "ESCALATION_API_REQUEST_TIMEOUT": "request_timeout",
}
"""Environment variables of the time bounds (seconds, decimals allowed) -> ApiSettings fields."""


def parse_tokens(raw: str) -> tuple[str, ...]:
    return tuple(token.strip() for token in raw.split(",") if token.strip())


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _seconds(environ: Mapping[str, str], name: str) -> float:
    raw = environ[name]
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
