"""Every setting the processes read, in one place (pydantic-settings).

Read once, at start-up, by whoever runs a process (worker, API, CLI, dev stack) and passed
down; never at import. Each class reads the environment (and a ``.env`` file in the working
directory), or a given mapping (``from_env``), or takes values directly (the dev stack and
tests build them). Invalid values raise ``ConfigError`` naming the variable.
The configuration table in docs/configuration.md is generated from these classes:
``python -m escalations.settings``.

Temporal's own connection settings (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``,
``TEMPORAL_API_KEY``, TLS, profiles) are read by ``temporalio.envconfig`` exactly as the
``temporal`` CLI reads them (``temporal_connect_config``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from schemas.durations import parse_duration
from schemas.keys import DEFAULT_TASK_QUEUE


def pin_zone_database() -> None:
    """Use the pinned ``tzdata`` package's zone database, never the host's.

    Calendar and rotation maths must give the same answers on every worker, on replay and in
    the API whatever tzdata the host has (tzdata 2026 moved Cuba to year-round UTC-4, for one).
    Zones already loaded stay cached, so processes call this first thing at start-up.
    """
    zoneinfo.reset_tzpath(to=())
    zoneinfo.ZoneInfo.clear_cache()


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


def env(*names: str, description: str, secret: bool = False) -> Any:
    """A field read from these environment variables (the first one set wins). A ``secret``
    field's value is never repeated in an error message."""
    extra = {"json_schema_extra": {"secret": True}} if secret else {}
    return {"validation_alias": AliasChoices(*names), "description": description, **extra}


class _MappingSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Names are case-sensitive (Settings.model_config); empty values count as unset.
        return {name: value for name, value in self._environ.items() if value != ""}


class Settings(BaseSettings):
    """What every settings class shares: one error style, ``.env`` support, a given mapping."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True,
                                      env_ignore_empty=True, populate_by_name=True, case_sensitive=True)
    _environ: ClassVar[Mapping[str, str] | None] = None
    read_by: ClassVar[str | None] = None  # the configuration table's "read by" (default: from the class name)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        if cls._environ is not None:
            return (init_settings, _MappingSource(settings_cls, cls._environ))
        return (init_settings, env_settings, dotenv_settings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Read from ``environ`` (default: the process environment and ``.env``); ``overrides``
        (field names) win. Raises ``ConfigError`` naming every invalid variable."""
        # A subclass that reads ``environ`` instead of the process's (a class per call: start-up only).
        reader = type(cls.__name__, (cls,), {"_environ": environ}) if environ is not None else cls
        try:
            return reader(**{key: value for key, value in overrides.items() if value is not None})
        except ValidationError as err:
            raise ConfigError(describe(cls, err)) from None
        except SettingsError as err:
            raise ConfigError(str(err)) from None

    @classmethod
    def of(cls, **values: Any) -> Self:
        """Built from these values only (no environment, no ``.env``): for the dev stack and tests."""
        return cls.from_env({}, **values)

    def with_overrides(self, **overrides: Any) -> Self:
        """A copy with these fields changed (and nothing read again)."""
        values = self.model_dump()
        values.update({key: value for key, value in overrides.items() if value is not None})
        return type(self).of(**values)


def variable_of(cls: type[BaseSettings], field: str) -> str:
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field


def _is_secret(cls: type[BaseSettings], field: str) -> bool:
    for name, info in cls.model_fields.items():
        if field == name or field == variable_of(cls, name):
            extra = info.json_schema_extra
            return (isinstance(extra, dict) and bool(extra.get("secret"))) or "SecretStr" in str(info.annotation)
    return False


def describe(cls: type[BaseSettings], err: ValidationError) -> str:
    problems = []
    for error in err.errors():
        if not error["loc"]:  # a check across fields: its message names the variables itself
            problems.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        field = str(error["loc"][0])
        name = variable_of(cls, field) if field in cls.model_fields else field
        # Never echo a secret's value, whether the error names the field or its variable.
        secret = _is_secret(cls, field)
        problems.append((f"{name}: " if name else "") + error["msg"].removeprefix("Value error, ")
                        + (f" (got {error['input']!r})" if isinstance(error.get("input"), str | int) and not secret
                           else ""))
    return "; ".join(problems)


def temporal_connect_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``Client.connect`` keyword arguments from the standard ``TEMPORAL_*`` variables and profiles."""
    # Imported here: it loads the whole Temporal client, which `escalations --help` never needs.
    from temporalio.envconfig import ClientConfig

    config = dict(ClientConfig.load_client_connect_config(
        override_env_vars=dict(environ) if environ is not None else None))
    config.setdefault("target_host", "localhost:7233")
    return config


def _seconds(value: Any) -> Any:
    """``10``, ``2.5`` or a duration: ``10s``, ``2m``, ``PT1M``."""
    if isinstance(value, str) and value.strip() and not value.strip().replace(".", "", 1).isdigit():
        parsed = parse_duration(value.strip())
        if not isinstance(parsed, timedelta):
            raise ValueError("use seconds or a duration such as 10s or 2m")
        return parsed.total_seconds()
    return value


Positive = Annotated[int, Field(ge=1)]
IDEMPOTENCY_TTL_DESCRIPTION = ("how long an Idempotency-Key is kept (s): the API replays it within this, "
                               "housekeeping purges it after")
Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]
SecondsOrZero = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]
Port = Annotated[int, Field(ge=0, le=65535)]


# -- every process: logs and traces ------------------------------------------------------


class TelemetrySettings(Settings):
    """Logs and traces, read by every process (worker, API, dev stack). The OpenTelemetry
    exporter reads the other standard ``OTEL_*`` variables itself (headers, protocol,
    service name, sampler)."""

    read_by: ClassVar[str] = "every process"

    log_format: Literal["text", "json"] = Field("text", **env(
        "ESCALATION_LOG_FORMAT", description="`text` (one line for people) or `json` (one object per line, "
                                             "with workflow, run, activity, ticket and request ids)"))
    log_level: Annotated[str, BeforeValidator(lambda v: v.strip().upper() if isinstance(v, str) else v)] = Field(
        "INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
        **env("ESCALATION_LOG_LEVEL", description="DEBUG, INFO, WARNING, ERROR or CRITICAL"))
    otel_endpoint: str | None = Field(None, **env(
        "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        description="OpenTelemetry collector: traces on when set and the `otel` extra is installed"))
    otel_protocol: Literal["grpc", "http/protobuf"] = Field("grpc", **env(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", description="OTLP protocol of the traces"))


# -- the worker ---------------------------------------------------------------------


class WorkerSettings(Settings):
    """``escalations worker``."""

    database_url: str = Field(..., **env("DATABASE_URL", description="PostgreSQL (the dev stack sets it)"))
    task_queue: str = Field(DEFAULT_TASK_QUEUE, **env("ESCALATION_TASK_QUEUE", description="Temporal task queue"))
    policy_file: str | None = Field(None, **env(
        "ESCALATION_POLICY_FILE", description="the default policy (YAML); packaged default when unset"))
    max_cached_workflows: Positive = Field(10_000, **env(
        "ESCALATION_MAX_CACHED_WORKFLOWS", description="runs kept in memory (bounds the worker's memory)"))
    # Few workflow tasks at a time: activations share one GIL, so 200 in flight made every one
    # slow without adding throughput (docs/benchmarks.md). Activities are I/O and get more room.
    max_concurrent_workflow_tasks: Positive = Field(5, **env(
        "ESCALATION_MAX_CONCURRENT_WORKFLOW_TASKS", description="workflow tasks at once"))
    max_concurrent_activities: Positive = Field(50, **env(
        "ESCALATION_MAX_CONCURRENT_ACTIVITIES", description="activities at once"))
    max_concurrent_local_activities: Positive = Field(20, **env(
        "ESCALATION_MAX_CONCURRENT_LOCAL_ACTIVITIES",
        description="local activities at once (runs of the released commit path)"))
    sticky_queue_timeout_seconds: Seconds = Field(3.0, **env(
        "ESCALATION_STICKY_QUEUE_TIMEOUT_SECONDS",
        description="a task for a dead worker's cached run moves to another after this"))
    pool_size: Positive = Field(20, **env("ESCALATION_DB_POOL_SIZE", description="PostgreSQL connections"))
    idempotency_ttl_seconds: Seconds = Field(24 * 3600.0, **env(
        "ESCALATION_API_IDEMPOTENCY_TTL", description=IDEMPOTENCY_TTL_DESCRIPTION))
    # False: the workflow modules are passed through the sandbox instead of being re-imported
    # for every run (about 0.4 MB per cached run and 10 ms of CPU per new run otherwise).
    strict_sandbox: bool = Field(False, **env(
        "ESCALATION_STRICT_SANDBOX",
        description="re-import workflow modules for every run (the sandbox's full checks, as the tests run)"))
    metrics_host: str = Field("127.0.0.1", **env(
        "ESCALATION_METRICS_HOST", description="listen address of the worker's /metrics, /livez and /readyz"))
    metrics_port: Port = Field(9464, **env(
        "ESCALATION_METRICS_PORT", description="listen port of the worker's /metrics, /livez and /readyz (0: any free)"))
    health_timeout: Seconds = Field(2.0, **env(
        "ESCALATION_WORKER_HEALTH_TIMEOUT", description="the worker's /readyz in total"))
    # A deploy sends SIGTERM: the worker stops polling at once and lets running activities
    # (a page being sent, a projection step) finish for this long before cancelling them.
    shutdown_grace: SecondsOrZero = Field(25.0, **env(
        "ESCALATION_SHUTDOWN_GRACE",
        description="on SIGTERM, running activities get this long to finish (keep it below the "
                    "orchestrator's kill timeout)"))

    @property
    def graceful_shutdown_timeout(self) -> timedelta:
        return timedelta(seconds=self.shutdown_grace)

    @property
    def sticky_queue_timeout(self) -> timedelta:
        return timedelta(seconds=self.sticky_queue_timeout_seconds)

    @property
    def idempotency_ttl(self) -> timedelta:
        return timedelta(seconds=self.idempotency_ttl_seconds)


# -- notifications ------------------------------------------------------------------

_CHAT_ENV = {"slack": "ESCALATION_SLACK_WEBHOOK_URL", "teams": "ESCALATION_TEAMS_WEBHOOK_URL"}


WEBHOOK_SECRET_MIN = 32
_WEBHOOK_KDF_SALT = b"escalations/webhook-signing/v1"


def derive_webhook_secret(master: str, url: str, *, customer: bool) -> str:
    """``whsec_`` + base64 of a 32-byte key for one destination (see ``webhook_signing_secret``)."""
    # Imported here: the CLI reads its settings from this module at every start.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    audience = b"customer" if customer else b"internal"
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_WEBHOOK_KDF_SALT,
               info=audience + b"\x00" + url.encode()).derive(master.encode())
    return "whsec_" + base64.b64encode(key).decode()


ACTION_KEY_DESCRIPTION = ("signs the action links in pages (32+ characters each, comma-separated, newest first: "
                          "the first signs, every one verifies); unset: pages carry no links")
SLACK_SIGNING_DESCRIPTION = ("Slack app's signing secret: POST /integrations/slack/interactions verifies Slack's "
                             "requests with it, and Slack pages' buttons act in Slack (unset: they open the "
                             "signed link)")


def _action_keys(value: SecretStr | None) -> tuple[bytes, ...]:
    from escalations.links import parse_action_keys

    if value is None:
        return ()
    try:
        return parse_action_keys(value.get_secret_value())
    except ValueError as exc:
        raise ValueError(f"ESCALATION_ACTION_KEY: {exc}") from None


def _public_url(value: str | None) -> str | None:
    from escalations.links import check_public_url

    return check_public_url(value) if value is not None else None


def normalise_target(target: str) -> str:
    """``#eng-oncall`` -> ``ENG_ONCALL`` (the suffix of a per-target environment variable)."""
    return re.sub(r"[^A-Z0-9]+", "_", target.upper()).strip("_")


def _per_target(environ: Mapping[str, str], prefix: str) -> dict[str, str]:
    return {normalise_target(name[len(prefix) + 1:]): value.strip() for name, value in environ.items()
            if name.startswith(prefix + "_") and len(name) > len(prefix) + 1 and value.strip()}


class NotificationSettings(Settings):
    """Channel endpoints and credentials (worker). Secrets are ``SecretStr``; ``redact`` removes
    them from any text about to be logged or stored."""

    request_timeout: Seconds = Field(10.0, **env(
        "ESCALATION_NOTIFY_TIMEOUT", description="seconds one request to a channel may take"))
    lease_seconds: Seconds = Field(120.0, **env(
        "ESCALATION_NOTIFY_LEASE", description="ledger claim of a delivery (runs of the released commit path)"))
    max_parallel: Positive = Field(8, **env("ESCALATION_NOTIFY_PARALLEL", description="sends at once per batch"))
    max_retry_delay: Seconds = Field(300.0, **env(
        "ESCALATION_NOTIFY_MAX_RETRY_DELAY", description="the longest Retry-After honoured (seconds)"))
    ui_url: str = Field("http://localhost:8233", **env(
        "ESCALATION_UI_URL", description="Temporal UI, for links in messages (made for an `https:` address only)"))
    namespace: str = Field("default", **env("TEMPORAL_NAMESPACE", description="Temporal namespace, for links"))
    webhook_secret: SecretStr | None = Field(None, **env(
        "ESCALATION_WEBHOOK_SECRET",
        description="master key of webhook signatures (32+ characters); each destination signs with its own "
                    "key derived from it (`escalations webhook-secret URL`)"))
    max_response_bytes: Positive = Field(64 * 1024, **env(
        "ESCALATION_NOTIFY_MAX_RESPONSE_BYTES",
        description="bytes of a receiver's answer read at most (the rest is left unread)"))
    slack_webhook_url: SecretStr | None = Field(None, **env(
        "ESCALATION_SLACK_WEBHOOK_URL", description="Slack incoming webhook; `…_<TARGET>` per target"))
    slack_webhook_urls: dict[str, SecretStr] = Field(default_factory=dict)
    teams_webhook_url: SecretStr | None = Field(None, **env(
        "ESCALATION_TEAMS_WEBHOOK_URL", description="Teams workflow webhook; `…_<TARGET>` per target"))
    teams_webhook_urls: dict[str, SecretStr] = Field(default_factory=dict)
    smtp_host: str | None = Field(None, **env("ESCALATION_SMTP_HOST", description="e-mail: SMTP server"))
    smtp_port: int = Field(587, ge=1, le=65535, **env("ESCALATION_SMTP_PORT", description="e-mail: SMTP port"))
    smtp_starttls: bool | None = Field(None, **env(
        "ESCALATION_SMTP_STARTTLS", description="e-mail: STARTTLS (default on unless ESCALATION_SMTP_TLS)"))
    smtp_tls: bool = Field(False, **env("ESCALATION_SMTP_TLS", description="e-mail: implicit TLS (port 465)"))
    smtp_username: str | None = Field(None, **env("ESCALATION_SMTP_USERNAME", description="e-mail: login"))
    smtp_password: SecretStr | None = Field(None, **env("ESCALATION_SMTP_PASSWORD", description="e-mail: password"))
    smtp_from: str | None = Field(None, **env("ESCALATION_SMTP_FROM", description="e-mail: sender address"))
    smtp_ca_file: str | None = Field(None, **env(
        "ESCALATION_SMTP_CA_FILE", description="e-mail: CA bundle for the server's certificate"))
    jira_base_url: str | None = Field(None, **env("ESCALATION_JIRA_BASE_URL", description="Jira Cloud site"))
    jira_email: str | None = Field(None, **env("ESCALATION_JIRA_EMAIL", description="Jira: account e-mail"))
    jira_api_token: SecretStr | None = Field(None, **env("ESCALATION_JIRA_API_TOKEN", description="Jira: API token"))
    jira_issue_type: str = Field("Task", **env("ESCALATION_JIRA_ISSUE_TYPE", description="Jira: issue type"))
    jira_project: str | None = Field(None, **env(
        "ESCALATION_JIRA_PROJECT", description="Jira: project key when a contact names none"))
    action_key: SecretStr | None = Field(None, **env("ESCALATION_ACTION_KEY", description=ACTION_KEY_DESCRIPTION))
    public_url: str | None = Field(None, **env(
        "ESCALATION_PUBLIC_URL",
        description="the API's address as people reach it (https; http only on localhost): action links start "
                    "with it; unset: pages carry no links"))
    slack_signing_secret: SecretStr | None = Field(None, **env(
        "ESCALATION_SLACK_SIGNING_SECRET", description=SLACK_SIGNING_DESCRIPTION))
    _action_keys: tuple[bytes, ...] = PrivateAttr(default=())

    @field_validator("public_url")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return _public_url(value)

    @model_validator(mode="after")
    def _read_action_keys(self) -> Self:
        # Here (not in a field validator): no error message ever repeats a key.
        self._action_keys = _action_keys(self.action_key)
        return self

    @property
    def action_keys(self) -> tuple[bytes, ...]:
        """HMAC keys of action links, newest first (empty: links are off)."""
        return self._action_keys

    @property
    def action_links(self) -> bool:
        """Whether pages carry action links: a key and a public URL are set."""
        return bool(self._action_keys) and self.public_url is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        source = os.environ if environ is None else environ
        for channel, prefix in _CHAT_ENV.items():
            overrides.setdefault(f"{channel}_webhook_urls", _per_target(source, prefix))
        return super().from_env(environ, **overrides)

    @field_validator("webhook_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # A customer holds a key derived from it: a short master could be guessed offline from
        # that key, and with it every internal receiver's key.
        if value is not None and len(value.get_secret_value()) < WEBHOOK_SECRET_MIN:
            raise ValueError(f"must be at least {WEBHOOK_SECRET_MIN} characters (e.g. `openssl rand -hex 32`)")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.lease_seconds < 3 * self.request_timeout:
            raise ValueError(
                f"ESCALATION_NOTIFY_LEASE ({self.lease_seconds:g}s) must be at least three times "
                f"ESCALATION_NOTIFY_TIMEOUT ({self.request_timeout:g}s): a claim must outlive its send")
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError("ESCALATION_SMTP_TLS (implicit TLS, port 465) and ESCALATION_SMTP_STARTTLS exclude "
                             "each other; set ESCALATION_SMTP_STARTTLS=false")
        return self

    @property
    def starttls(self) -> bool:
        """STARTTLS unless switched off, or implicit TLS is on."""
        return (not self.smtp_tls) if self.smtp_starttls is None else self.smtp_starttls

    # -- lookups ----------------------------------------------------------------

    def chat_webhook_env_names(self, channel: str, target: str | None) -> list[str]:
        prefix = _CHAT_ENV[channel]
        suffix = normalise_target(target) if target else ""
        return [f"{prefix}_{suffix}", prefix] if suffix else [prefix]

    def chat_webhook_url(self, channel: str, target: str | None) -> SecretStr | None:
        specific = self.slack_webhook_urls if channel == "slack" else self.teams_webhook_urls
        default = self.slack_webhook_url if channel == "slack" else self.teams_webhook_url
        suffix = normalise_target(target) if target else ""
        return specific.get(suffix) if suffix and suffix in specific else default

    def webhook_signing_secret(self, url: str, *, customer: bool) -> str:
        """The Standard Webhooks secret (``whsec_…``) the destination ``url`` verifies with.

        HKDF-SHA256 of ``ESCALATION_WEBHOOK_SECRET`` with the audience and the URL (exactly as
        the policy writes it) as context: every destination has its own key, a customer's
        never equals an internal one (even for the same URL), and none reveals another.
        """
        if self.webhook_secret is None:
            raise ConfigError("ESCALATION_WEBHOOK_SECRET is not set")
        return derive_webhook_secret(self.webhook_secret.get_secret_value(), url, customer=customer)

    def workflow_url(self, workflow_id: str | None) -> str | None:
        from escalations.links import workflow_url

        return workflow_url(self.ui_url, self.namespace, workflow_id) if workflow_id else None

    def secrets(self) -> list[str]:
        found = [self.webhook_secret, self.slack_webhook_url, self.teams_webhook_url, self.smtp_password,
                 self.jira_api_token, self.action_key, self.slack_signing_secret,
                 *self.slack_webhook_urls.values(), *self.teams_webhook_urls.values()]
        return [s.get_secret_value() for s in found if s is not None and s.get_secret_value()]

    def redact(self, text: str) -> str:
        """``text`` without any configured secret (nor the path of a secret webhook URL)."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, "[redacted]")
            path = re.sub(r"^[a-z][a-z0-9+.-]*://[^/]*", "", secret)
            if len(path) >= 8 and path != secret:
                text = text.replace(path, "[redacted]")
        return text


# -- API tokens -----------------------------------------------------------------------

Scope = Literal["read", "start", "act", "tickets", "csat", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "start", "act", "tickets", "csat", "admin")
"""What a token may do: ``read`` (GET escalations, KPIs), ``start`` (POST /escalations), ``act``
(commands), ``tickets`` (POST /tickets*), ``csat`` (POST …/csat), ``admin`` (everything, and
what is operational)."""
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_TOKEN_NAME = re.compile(TOKEN_NAME_PATTERN)
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class ApiToken(BaseModel):
    """A bearer token as the API keeps it: its name, its scopes and the SHA-256 of the token.

    The token itself is never kept: a presented token is hashed and compared with ``sha256``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=TOKEN_NAME_PATTERN)
    scopes: frozenset[Scope] = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False)
    legacy: bool = Field(default=False, description="a bare token of the old format (every scope)")

    def allows(self, scope: Scope) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    @property
    def principal(self) -> str:
        """Who calls with this token, as events record it (``via``)."""
        return f"api:{self.name}"


def token_digest(token: str) -> str:
    """The lower-case hex SHA-256 of a bearer token (what an entry holds)."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_entry(name: str, scopes: Iterable[str], token: str) -> str:
    """The ``ESCALATION_API_TOKENS`` entry for ``token``: ``name:scope+scope:sha256-hex``."""
    return f"{name}:{'+'.join(scopes)}:{token_digest(token)}"


def parse_token_entries(entries: Iterable[str], *, variable: str = "") -> list[ApiToken]:
    """``name:scope+scope:sha256-hex`` entries, or bare tokens of the old format.

    A bare token (no ``:``) keeps meaning what it meant: every scope (``admin``); it is named
    ``legacy-<n>`` by its place among the bare ones. Errors name the entry by its number and
    repeat nothing of it (a mistyped entry may hold a token).
    """
    where = f"{variable}: " if variable else ""
    tokens: list[ApiToken] = []
    bare = 0
    for number, raw in enumerate(entries, start=1):
        entry = raw.strip()
        if ":" not in entry:
            bare += 1
            tokens.append(ApiToken(name=f"legacy-{bare}", scopes=frozenset({"admin"}),
                                   sha256=token_digest(entry), legacy=True))
            continue
        parts = entry.split(":")
        if len(parts) != 3:
            raise ValueError(f"{where}entry {number} is not NAME:SCOPE[+SCOPE...]:SHA256 "
                             f"(it has {len(parts)} parts separated by ':')")
        name, scopes, digest = (part.strip() for part in parts)
        if not _TOKEN_NAME.match(name):
            raise ValueError(f"{where}entry {number}: the name must match {TOKEN_NAME_PATTERN}")
        wanted = [scope.strip() for scope in scopes.split("+")]
        if not all(scope in SCOPES for scope in wanted):
            raise ValueError(f"{where}entry {number}: a scope is not one of {', '.join(SCOPES)} "
                             "(join several with '+')")
        if not _SHA256_HEX.match(digest):
            raise ValueError(f"{where}entry {number}: the last part must be the token's SHA-256 in hex "
                             "(64 characters: `printf %s TOKEN | sha256sum`), never the token")
        tokens.append(ApiToken(name=name, scopes=frozenset(wanted), sha256=digest.lower()))  # type: ignore[arg-type]
    return tokens


def _token_list(value: Any) -> Any:
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(parse_token_entries([v for v in value if v.strip()]))
    return value


def read_token_file(path: str) -> list[ApiToken]:
    """The entries of a tokens file: one per line; blank lines and ``#`` comments ignored."""
    variable = "ESCALATION_API_TOKENS_FILE"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{variable}: cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{variable}: {path} is not UTF-8 text") from None
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return parse_token_entries([line for line in lines if line], variable=f"{variable} ({path})")


# -- the HTTP API ---------------------------------------------------------------------


class ApiSettings(Settings):
    """``escalations api``. ``create_app`` refuses to run with an unsafe set (``check``).

    ``temporal`` holds the keyword arguments of ``Client.connect`` as
    ``temporalio.envconfig`` reads them from the ``TEMPORAL_*`` variables and profiles.
    Time bounds: during an outage every route answers 503/504 within them.
    """

    tokens: Annotated[tuple[ApiToken, ...], NoDecode] = Field((), **env(
        "ESCALATION_API_TOKENS", secret=True,
        description="bearer tokens, comma-separated `name:scope+scope:sha256-hex` entries "
                    "(a bare token of the old format has every scope); see docs/api.md"))
    tokens_file: str | None = Field(None, **env(
        "ESCALATION_API_TOKENS_FILE", description="a file of token entries, one per line (`#` comments), "
                                                  "added to ESCALATION_API_TOKENS"))
    task_queue: str = Field(DEFAULT_TASK_QUEUE, **env("ESCALATION_TASK_QUEUE", description="Temporal task queue"))
    database_url: str | None = Field(None, **env("DATABASE_URL", description="PostgreSQL"))
    policy_file: str | None = Field(None, **env("ESCALATION_POLICY_FILE", description="the default policy (YAML)"))
    temporal: dict[str, Any] = Field(default_factory=lambda: {"target_host": "localhost:7233"})
    # The keys of the API's own Temporal client and of its codec endpoints (/codec/*).
    codec: CodecSettings = Field(default_factory=lambda: CodecSettings.of())
    host: str = Field("127.0.0.1", **env("ESCALATION_API_HOST", description="listen address"))
    port: int = Field(8000, ge=0, le=65535, **env("ESCALATION_API_PORT", description="listen port (0: any free)"))
    max_body_bytes: Positive = Field(1024 * 1024, **env("ESCALATION_API_MAX_BODY_BYTES", description="413 above"))
    ui_url: str | None = Field(None, **env("ESCALATION_UI_URL", description="Temporal UI, for links"))
    temporal_rpc_timeout: Seconds = Field(5.0, **env(
        "ESCALATION_API_TEMPORAL_TIMEOUT", description="a Temporal call (start, describe, list); 504 after it"))
    command_timeout: Seconds = Field(10.0, **env(
        "ESCALATION_API_COMMAND_TIMEOUT", description="a query or update, which a worker must answer"))
    probe_timeout: Seconds = Field(2.0, **env(
        "ESCALATION_API_PROBE_TIMEOUT", description="telling 'no worker' from 'Temporal stuck' after a timeout"))
    postmortem_wait: Seconds = Field(10.0, **env(
        "ESCALATION_API_POSTMORTEM_WAIT", description="POST /postmortem waits this long for the close"))
    db_acquire_timeout: Seconds = Field(3.0, **env(
        "ESCALATION_API_DB_ACQUIRE_TIMEOUT", description="waiting for a PostgreSQL connection"))
    db_command_timeout: Seconds = Field(5.0, **env(
        "ESCALATION_API_DB_COMMAND_TIMEOUT", description="one PostgreSQL statement"))
    health_timeout: Seconds = Field(2.0, **env(
        "ESCALATION_API_HEALTH_TIMEOUT", description="/readyz (and its alias /healthz) in total"))
    request_timeout: Seconds = Field(30.0, **env(
        "ESCALATION_API_REQUEST_TIMEOUT", description="last-resort bound on any request"))
    retry_after: Positive = Field(5, **env("ESCALATION_API_RETRY_AFTER", description="Retry-After of a 503 (s)"))
    idempotency_ttl_seconds: Seconds = Field(24 * 3600.0, **env(
        "ESCALATION_API_IDEMPOTENCY_TTL", description=IDEMPOTENCY_TTL_DESCRIPTION))
    pool_size: Positive = Field(10, **env("ESCALATION_API_DB_POOL_SIZE", description="PostgreSQL connections"))
    freshdesk_webhook_secret: SecretStr | None = Field(None, **env(
        "ESCALATION_FRESHDESK_WEBHOOK_SECRET",
        description="POST /tickets/freshdesk: the secret Freshdesk's webhook sends in X-Freshdesk-Secret "
                    "(unset: the route answers 503)"))
    freshdesk_timezone: str = Field("UTC", **env(
        "ESCALATION_FRESHDESK_TIMEZONE",
        description="the Freshdesk helpdesk's time zone, for placeholder times without an offset"))
    intercom_client_secret: SecretStr | None = Field(None, **env(
        "ESCALATION_INTERCOM_CLIENT_SECRET",
        description="POST /tickets/intercom: the Intercom app's client secret, which signs its webhooks "
                    "(unset: the route answers 503)"))
    action_key: SecretStr | None = Field(None, **env(
        "ESCALATION_ACTION_KEY", description=ACTION_KEY_DESCRIPTION))
    slack_signing_secret: SecretStr | None = Field(None, **env(
        "ESCALATION_SLACK_SIGNING_SECRET", description=SLACK_SIGNING_DESCRIPTION))
    jira_webhook_secret: SecretStr | None = Field(None, **env(
        "ESCALATION_JIRA_WEBHOOK_SECRET",
        description="POST /integrations/jira/webhook: the secret of the Jira admin webhook, which signs each "
                    "delivery (`X-Hub-Signature: sha256=…`; unset: the route answers 503)"))
    jira_account_id: str | None = Field(None, max_length=128, **env(
        "ESCALATION_JIRA_ACCOUNT_ID",
        description="Jira back-sync: the accountId of the user the Jira channel posts as, whose comments never "
                    "become notes (unset: learnt from the comments the channel posts)"))

    @field_validator("freshdesk_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("use an IANA time zone such as Europe/Berlin or UTC") from None
        return value

    _api_tokens: tuple[ApiToken, ...] = PrivateAttr(default=())

    @field_validator("tokens", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _token_list(value)

    @model_validator(mode="after")
    def _every_token(self) -> Self:
        tokens = [*self.tokens, *(read_token_file(self.tokens_file) if self.tokens_file else [])]
        names = [token.name for token in tokens]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"ESCALATION_API_TOKENS(_FILE): token names must be unique; given twice: "
                             f"{', '.join(twice)}")
        digests = [token.sha256 for token in tokens]
        if len(set(digests)) != len(digests):
            same = sorted({t.name for t in tokens if digests.count(t.sha256) > 1})
            raise ValueError(f"ESCALATION_API_TOKENS(_FILE): {', '.join(same)} are the same token; "
                             "one token has one name")
        self._api_tokens = tuple(tokens)
        self._action_keys = _action_keys(self.action_key)
        return self

    _action_keys: tuple[bytes, ...] = PrivateAttr(default=())

    @property
    def action_keys(self) -> tuple[bytes, ...]:
        """HMAC keys that verify action links, newest first (empty: the action routes answer 503)."""
        return self._action_keys

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        overrides.setdefault("temporal", temporal_connect_config(environ))
        overrides.setdefault("codec", CodecSettings.from_env(environ))
        return super().from_env(environ, **overrides)

    @property
    def namespace(self) -> str:
        return str(self.temporal.get("namespace") or "default")

    @property
    def idempotency_ttl(self) -> timedelta:
        return timedelta(seconds=self.idempotency_ttl_seconds)

    @property
    def api_tokens(self) -> tuple[ApiToken, ...]:
        """Every token: ESCALATION_API_TOKENS, then ESCALATION_API_TOKENS_FILE."""
        return self._api_tokens

    def check(self) -> None:
        """Refuse to serve without tokens (never open by accident) or without a database."""
        if not self.api_tokens:
            raise ConfigError("ESCALATION_API_TOKENS is empty: the API refuses to start without bearer tokens "
                              "(set one or more, comma-separated, or ESCALATION_API_TOKENS_FILE)")
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (the dev stack sets it for you: `escalations dev`)")


# -- the command line -------------------------------------------------------------------


class CliSettings(Settings):
    """Where the ``escalations`` commands look for the dev stack (``escalations/connect.py``)."""

    read_by: ClassVar[str] = "cli"

    data_dir: Path | None = Field(None, **env(
        "ESCALATION_DATA_DIR",
        description="the default of every command's `--data-dir` (the dev stack's folder, holding "
                    "stack.json); unset: `.data`, or the last stack `escalations dev` started while it runs"))
    state_home: Path | None = Field(None, **env(
        "XDG_STATE_HOME",
        description="`escalations dev` remembers its data dir in `$XDG_STATE_HOME/escalations/` "
                    "(unset: `~/.local/state/escalations/`)"))

    @property
    def state_dir(self) -> Path:
        """Where the CLI keeps what it remembers between runs (the last dev stack's data dir)."""
        # The XDG spec: a relative path in the variable is ignored.
        home = self.state_home if self.state_home is not None and self.state_home.is_absolute() else None
        return (home or Path.home() / ".local" / "state") / "escalations"



# -- payload encryption (every process with a Temporal client) ---------------------


KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KEY_BYTES = 32  # AES-256


@dataclasses.dataclass(frozen=True)
class EncryptionKey:
    """One AES-256 key and the id payloads name it by (the id is stored in plaintext)."""

    id: str
    secret: bytes = dataclasses.field(repr=False)


def parse_encryption_keys(text: str, variable: str) -> tuple[EncryptionKey, ...]:
    """``id:base64`` entries, newest first, separated by commas or line breaks (``#`` starts a
    comment). Each key is 32 random bytes in standard or URL-safe base64. The error names the
    entry by its position and id, never its key material."""
    entries = [entry.strip() for line in text.splitlines() for entry in line.split("#", 1)[0].split(",")]
    keys: list[EncryptionKey] = []
    for number, entry in enumerate((e for e in entries if e), start=1):
        key_id, colon, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        where = f"{variable}: entry {number}"
        if not colon or not encoded:
            raise ValueError(f"{where} is not `id:base64-key` (e.g. k2026-01:{'A' * 43}=)")
        if not KEY_ID_PATTERN.fullmatch(key_id):
            raise ValueError(f"{where}: key id {key_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if any(key.id == key_id for key in keys):
            raise ValueError(f"{where}: key id {key_id!r} appears twice")
        try:
            standard = encoded.replace("-", "+").replace("_", "/")
            secret = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except binascii.Error:
            raise ValueError(f"{where} ({key_id}): the key is not valid base64") from None
        if len(secret) != KEY_BYTES:
            raise ValueError(f"{where} ({key_id}): the key is {len(secret)} bytes; AES-256 needs {KEY_BYTES} "
                             "(generate one: escalations keys generate)")
        keys.append(EncryptionKey(key_id, secret))
    if not keys:
        raise ValueError(f"{variable} holds no key")
    return tuple(keys)


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _origin(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        raise ValueError(f"{value!r} is not an origin such as http://localhost:8233 (scheme, host, port; no path)")
    return f"{parts.scheme}://{parts.netloc}"


class CodecSettings(Settings):
    """The payload codec (worker, API, CLI, dev stack: every process with a Temporal client) and
    the API's codec endpoints. No key: payloads stay plain JSON (and an encrypted one cannot be
    read, with an error naming its key id)."""

    read_by: ClassVar[str | None] = "worker, api, cli, dev"

    encryption_keys: SecretStr | None = Field(None, **env(
        "ESCALATION_ENCRYPTION_KEYS",
        description="payload encryption keys, `id:base64` (32 bytes each), comma-separated, newest first; "
                    "encrypts with the first, decrypts with any (docs/security.md)"))
    encryption_keys_file: Path | None = Field(None, **env(
        "ESCALATION_ENCRYPTION_KEYS_FILE",
        description="a file holding ESCALATION_ENCRYPTION_KEYS' entries, one a line (instead of the variable)"))
    ui_origins: Annotated[tuple[str, ...], NoDecode] = Field((), **env(
        "ESCALATION_CODEC_UI_ORIGINS",
        description="browser origins (Temporal UI) allowed to call the API's /codec endpoints, comma-separated"),
        json_schema_extra={"read_by": "api"})
    ui_token: SecretStr | None = Field(None, **env(
        "ESCALATION_CODEC_UI_TOKEN",
        description="an API token that /codec requests from ESCALATION_CODEC_UI_ORIGINS without one stand for "
                    "(a UI without sign-in, which cannot send one: the dev stack's)"),
        json_schema_extra={"read_by": "api"})
    _keys: tuple[EncryptionKey, ...] = PrivateAttr(default=())

    @field_validator("ui_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("ui_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_origin(origin) for origin in value)

    @model_validator(mode="after")
    def _read_keys(self) -> Self:
        # Raised here (not per field) so no error message ever echoes the key material.
        if self.encryption_keys is not None and self.encryption_keys_file is not None:
            raise ValueError("set ESCALATION_ENCRYPTION_KEYS or ESCALATION_ENCRYPTION_KEYS_FILE, not both")
        if self.encryption_keys is not None:
            self._keys = parse_encryption_keys(self.encryption_keys.get_secret_value(), "ESCALATION_ENCRYPTION_KEYS")
        elif self.encryption_keys_file is not None:
            try:
                text = self.encryption_keys_file.read_text(encoding="utf-8")
            except OSError as err:
                raise ValueError(f"ESCALATION_ENCRYPTION_KEYS_FILE: cannot read {self.encryption_keys_file}: "
                                 f"{err.strerror or err}") from None
            self._keys = parse_encryption_keys(text, f"ESCALATION_ENCRYPTION_KEYS_FILE ({self.encryption_keys_file})")
        if self.ui_token is not None and not self.ui_origins:
            raise ValueError("ESCALATION_CODEC_UI_TOKEN needs ESCALATION_CODEC_UI_ORIGINS (the UI it stands for)")
        return self

    @property
    def keys(self) -> tuple[EncryptionKey, ...]:
        """Newest first: payloads are encrypted with ``keys[0]``."""
        return self._keys

    @property
    def encrypted(self) -> bool:
        return bool(self._keys)


ApiSettings.model_rebuild()  # its ``codec`` field names CodecSettings, defined after it


ALL_SETTINGS: tuple[type[Settings], ...] = (WorkerSettings, NotificationSettings, ApiSettings, TelemetrySettings,
                                             CodecSettings, CliSettings)


def configuration_table() -> str:
    """The Markdown table of every variable (docs/configuration.md is generated from it)."""
    rows: dict[str, tuple[str, str, list[str]]] = {}
    for cls in ALL_SETTINGS:
        for name, field in cls.model_fields.items():
            if field.description is None:
                continue
            variable = variable_of(cls, name)
            default = "required" if field.is_required() else (
                "—" if field.default in (None, (), {}) else f"`{field.default}`")
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            reader = str(extra.get("read_by") or cls.read_by or cls.__name__.removesuffix("Settings").lower())
            if variable in rows:
                rows[variable][2].append(reader)
                continue
            rows[variable] = (default, field.description, [reader])
    lines = ["| variable | default | what | read by |", "|---|---|---|---|"]
    for variable, (default, description, readers) in sorted(rows.items()):
        lines.append(f"| `{variable}` | {default} | {description} | {', '.join(readers)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(configuration_table())
