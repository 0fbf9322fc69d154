-- Event store, read model and notification ledger.

CREATE TABLE escalation_events (
    escalation_id text        NOT NULL,
    ticket_id     text        NOT NULL,
    seq           integer     NOT NULL CHECK (seq > 0),
    type          text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    payload       jsonb       NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (escalation_id, seq)
);
CREATE INDEX escalation_events_ticket ON escalation_events (ticket_id, occurred_at);
CREATE INDEX escalation_events_type ON escalation_events (type, occurred_at);

-- One row per escalation, folded from escalation_events by db/projection.py.
CREATE TABLE escalations (
    escalation_id            text        PRIMARY KEY,
    ticket_id                text        NOT NULL,
    workflow_id              text        NOT NULL,
    status                   text        NOT NULL,
    priority                 text        NOT NULL,
    kind                     text        NOT NULL,
    category                 text        NOT NULL,
    customer_id              text        NOT NULL,
    customer                 jsonb       NOT NULL,
    title                    text        NOT NULL,
    level                    text        NOT NULL,
    level_name               text        NOT NULL,
    owner                    text,
    owner_contact            jsonb,
    route                    text        NOT NULL,
    entry_level              text        NOT NULL,
    highest_level            text        NOT NULL,
    highest_rank             integer     NOT NULL,
    levels_reached           text[]      NOT NULL,
    paged_levels             text[]      NOT NULL,
    consulted                jsonb       NOT NULL DEFAULT '[]',
    trigger                  jsonb       NOT NULL,
    policy_name              text        NOT NULL,
    policy_version           integer     NOT NULL,
    opened_at                timestamptz NOT NULL,
    acknowledged_at          timestamptz,
    acknowledged_by          text,
    first_acknowledged_at    timestamptz,
    resolved_at              timestamptz,
    resolved_by              text,
    closed_at                timestamptz,
    ack_due                  timestamptz,
    resolve_due              timestamptz,
    next_customer_update_due timestamptz,
    sla_at_risk              boolean     NOT NULL DEFAULT false,
    sla_breached             boolean     NOT NULL DEFAULT false,
    breached_at              timestamptz,
    paused_since             timestamptz,
    paused_seconds           double precision NOT NULL DEFAULT 0,
    resolution_seconds       double precision,
    counts                   jsonb       NOT NULL DEFAULT '{}',
    fingerprint              text        NOT NULL,
    repeat_of                text,
    repeat_count             integer     NOT NULL DEFAULT 0,
    jira_key                 text,
    path                     jsonb       NOT NULL DEFAULT '[]',
    resolution               jsonb,
    postmortem               jsonb,
    last_seq                 integer     NOT NULL,
    updated_at               timestamptz NOT NULL
);
CREATE INDEX escalations_ticket ON escalations (ticket_id, opened_at DESC);
CREATE INDEX escalations_fingerprint ON escalations (fingerprint, opened_at DESC);
CREATE INDEX escalations_opened ON escalations (opened_at);

-- One row per delivery; the key is escalation id + event seq + recipient + channel.
CREATE TABLE notifications (
    idempotency_key      text        PRIMARY KEY,
    escalation_id        text        NOT NULL,
    ticket_id            text        NOT NULL,
    seq                  integer     NOT NULL,
    audience             text        NOT NULL,
    recipient            text        NOT NULL,
    channel              text        NOT NULL,
    target               text,
    template             text        NOT NULL,
    context              jsonb       NOT NULL,
    status               text        NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts             integer     NOT NULL DEFAULT 0,
    last_error           text,
    provider_response_id text,
    claimed_until        timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_escalation ON notifications (escalation_id, seq);

CREATE TABLE csat_responses (
    escalation_id text        PRIMARY KEY,
    ticket_id     text        NOT NULL,
    score         smallint    NOT NULL CHECK (score BETWEEN 1 AND 5),
    comment       text,
    received_at   timestamptz NOT NULL DEFAULT now()
);

-- Every policy version a run was pinned to; a changed file under a used version is refused.
CREATE TABLE policy_versions (
    name        text        NOT NULL,
    version     integer     NOT NULL,
    sha256      text        NOT NULL,
    document    jsonb       NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);
