"""Names shared by starters, workers and operators: defined once."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import SearchAttributeKey

DEFAULT_TASK_QUEUE = "escalations"
ESCALATION_WORKFLOW = "EscalationWorkflow"
POSTMORTEM_WORKFLOW = "PostmortemWorkflow"
SWEEP_WORKFLOW = "CriteriaSweepWorkflow"
HOUSEKEEPING_WORKFLOW = "HousekeepingWorkflow"
HOUSEKEEPING_SCHEDULE = "escalations-housekeeping"

# A workflow task started by a worker that then died is retried only after this; the
# server's default (10 s) would make every deadline due during a crash that much later.
# Tasks take milliseconds (the longest holds one local Postgres write).
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=4)

PRIORITY = SearchAttributeKey.for_keyword("EscalationPriority")
LEVEL = SearchAttributeKey.for_keyword("EscalationLevel")
STATUS = SearchAttributeKey.for_keyword("EscalationStatus")
CUSTOMER = SearchAttributeKey.for_keyword("CustomerId")
CATEGORY = SearchAttributeKey.for_keyword("EscalationCategory")
KIND = SearchAttributeKey.for_keyword("EscalationKind")
BREACHED = SearchAttributeKey.for_bool("SlaBreached")
NEXT_DEADLINE = SearchAttributeKey.for_datetime("NextDeadline")
# The current owner's name ("my escalations"); set by runs of the history-first commit path.
OWNER = SearchAttributeKey.for_keyword("EscalationOwner")

SEARCH_ATTRIBUTES = (PRIORITY, LEVEL, STATUS, CUSTOMER, CATEGORY, KIND, BREACHED, NEXT_DEADLINE, OWNER)

# Activity names, so workflow modules need not import activity code (asyncpg, httpx).
LOAD_POLICY = "load_policy"
PIN_POLICY = "pin_policy"
PROJECT_EVENTS = "project_events"
RECONCILE_ENDED_RUNS = "reconcile_ended_runs"
PURGE_IDEMPOTENCY_KEYS = "purge_idempotency_keys"
FIND_CANDIDATES = "find_sweep_candidates"
ESCALATE_TICKETS = "escalate_tickets"
SEND_NOTIFICATIONS = "send_notifications"
# Used only by runs that started on the released commit path (events stored by a local
# activity inside the deciding workflow task); kept until no such run is open.
FIND_REPEATS = "find_repeats"
RECORD_EVENTS = "record_events"
DELIVER_NOTIFICATIONS = "deliver_notifications"

# The patch that moved the commit path out of the workflow task (events recorded in history,
# projected to PostgreSQL afterwards): ``workflow.patched(HISTORY_FIRST)``.
HISTORY_FIRST = "history-first-commit"
# Housekeeping also purges the API's expired Idempotency-Keys (runs started before go on without).
PURGE_IDEMPOTENCY = "housekeeping-purge-idempotency-keys"


def search_attribute_flags() -> list[str]:
    """``Name=Type`` pairs as the ``temporal`` CLI takes them."""
    kinds = {"KEYWORD": "Keyword", "BOOL": "Bool", "DATETIME": "Datetime"}
    return [f"{key.name}={kinds[key.indexed_value_type.name]}" for key in SEARCH_ATTRIBUTES]

# Metrics the workflow records through ``workflow.metric_meter()`` (replay-safe: nothing is
# recorded while history replays); the SDK's Prometheus exporter serves them with its own.
LATENESS_METRIC = "escalation_deadline_lateness_seconds"
EVENTS_METRIC = "escalation_events_total"
# The clock label of a deadline kind (workflows/clocks.py ``ClockKind``): the breach is the
# resolution clock's deadline.
LATENESS_CLOCKS = {"ack": "ack", "breach": "resolve", "at_risk": "at_risk", "cadence": "cadence", "hold": "hold",
                   "auto_resume": "auto_resume", "handover": "handover"}
