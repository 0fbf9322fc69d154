-- Tickets, the criteria sweep's input (POST /tickets, POST /tickets/zendesk,
-- `escalations tickets import`), and the escalations the sweep started for them.

-- Columns for what the sweep reads; the full ticket (schemas/ticket.py) in `document`.
CREATE TABLE tickets (
    id               text        PRIMARY KEY,
    customer_id      text        NOT NULL,
    customer_segment text,
    subject          text        NOT NULL,
    category         text        NOT NULL,   -- slug of the ticket's category ('general' if none)
    priority         text        CHECK (priority IN ('P1', 'P2', 'P3', 'P4')),
    status           text        NOT NULL,
    users_affected   integer     CHECK (users_affected >= 0),
    interactions     integer     CHECK (interactions >= 0),
    opened_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,   -- the version: an older one never overwrites a newer one
    resolution_due   timestamptz,
    document         jsonb       NOT NULL,
    source           text        NOT NULL,   -- api | zendesk | import
    stored_at        timestamptz NOT NULL DEFAULT now()
);
-- The sweep's candidate query: open tickets in id order, keyset pages (activities/tickets.py).
CREATE INDEX tickets_sweep ON tickets (id) WHERE status NOT IN ('solved', 'closed');
CREATE INDEX tickets_customer ON tickets (customer_id);

-- One row per ticket version the sweep escalated (or is starting: run_id still null).
-- The primary key is the claim: one escalation per ticket version, whichever sweep gets there.
CREATE TABLE ticket_escalations (
    ticket_id         text        NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    ticket_updated_at timestamptz NOT NULL,
    workflow_id       text        NOT NULL,
    run_id            text,                  -- the escalation_id (first run id) once started
    rule              text        NOT NULL,
    detail            text        NOT NULL,
    repeat            boolean     NOT NULL,  -- the ticket had an escalation before
    sweep_id          text        NOT NULL,  -- <sweep workflow id>/<its first run id>
    claimed_at        timestamptz NOT NULL DEFAULT now(),
    escalated_at      timestamptz,
    PRIMARY KEY (ticket_id, ticket_updated_at)
);
CREATE INDEX ticket_escalations_run ON ticket_escalations (run_id);
