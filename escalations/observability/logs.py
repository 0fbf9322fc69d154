"""One logging set-up for every process: ``configure_logging(settings)``.

``ESCALATION_LOG_FORMAT=json`` writes one JSON object per line with ``timestamp`` (UTC),
``level``, ``logger``, ``message`` and, where known, ``workflow_id``, ``run_id``,
``activity``, ``ticket_id`` and ``request_id``; ``text`` writes the classic one-line form.
Temporal's logger adapters (``workflow.logger``, ``activity.logger``) put the workflow or
activity in ``extra``; ``ContextFilter`` flattens that into the fields above, and fills them
for any other logger used inside an activity (from ``activity.info()``) or an API request
(``REQUEST_ID``), so a line is found by ticket or request whichever module wrote it.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import IO, Any

from temporalio import activity
from temporalio import workflow as temporal_workflow

from escalations.settings import TelemetrySettings

REQUEST_ID: ContextVar[str | None] = ContextVar("escalations_request_id", default=None)
"""The API request being served (set by the API's request middleware)."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("workflow_id", "run_id", "activity", "ticket_id", "request_id")
_WORKFLOW_PREFIXES = ("escalation-", "postmortem-")


def ticket_of(workflow_id: str | None) -> str | None:
    """``escalation-SF-1042`` / ``postmortem-SF-1042`` -> ``SF-1042`` (the contract's workflow ids)."""
    for prefix in _WORKFLOW_PREFIXES:
        if workflow_id and workflow_id.startswith(prefix):
            return workflow_id[len(prefix):]
    return None


class ContextFilter(logging.Filter):
    """Adds the ids of FIELDS to every record (None where unknown); drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        found: dict[str, Any] = {}
        workflow = getattr(record, "temporal_workflow", None)
        if isinstance(workflow, dict):
            found.update(workflow_id=workflow.get("workflow_id"), run_id=workflow.get("run_id"))
        task = getattr(record, "temporal_activity", None)
        if not isinstance(task, dict) and activity.in_activity():
            info = activity.info()  # the fields the activity logger adds, for any other logger
            task = {"workflow_id": info.workflow_id, "workflow_run_id": info.workflow_run_id,
                    "activity_type": info.activity_type}
        if isinstance(task, dict):
            found.update(workflow_id=task.get("workflow_id"), run_id=task.get("workflow_run_id"),
                         activity=task.get("activity_type"))
        found.setdefault("request_id", REQUEST_ID.get())
        for name in FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, found.get(name))
        if record.ticket_id is None:  # type: ignore[attr-defined]
            record.ticket_id = ticket_of(record.workflow_id)  # type: ignore[attr-defined]
        return True


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    class Formatter(JsonFormatter):
        def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
            # An id that is not known is left out rather than written as null on every line.
            return {key: value for key, value in log_data.items() if value is not None or key not in FIELDS}

    # The adapters' dicts are flattened by ContextFilter; the SDK's full info objects are not JSON.
    reserved = [*_STANDARD_ATTRS, "temporal_workflow", "temporal_activity", "workflow_info", "activity_info", "temporal_log",
                "color_message"]
    return Formatter("%(levelname)s %(name)s %(message)s", rename_fields={"levelname": "level", "name": "logger"},
                     timestamp=True, reserved_attrs=reserved)


_STANDARD_ATTRS = tuple(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) + ("message", "asctime")


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when it was made: a
    command run in-process (a test's CliRunner, an embedding program) swaps stderr and closes
    its own afterwards, and a handler holding that closed stream fails every later record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def log_handler(settings: TelemetrySettings, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing ``settings``' format to ``stream`` (default: the current stderr), the
    ids filled in."""
    handler: logging.StreamHandler = logging.StreamHandler(stream) if stream is not None else StderrHandler()  # type: ignore[type-arg]
    handler.addFilter(ContextFilter())
    handler.setFormatter(json_formatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(settings: TelemetrySettings, stream: IO[str] | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one writing ``settings``' format at its level."""
    handler = log_handler(settings, stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # JSON lines carry the ids as fields; the adapters would also append them to the message.
    structured = settings.log_format == "json"
    temporal_workflow.logger.workflow_info_on_message = not structured
    activity.logger.activity_info_on_message = not structured
    return handler
