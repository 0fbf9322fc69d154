-- Which workflow task decided each event. Events are stored by a local activity inside the
-- workflow task that decides them; if that task never completes (its worker died, it timed
-- out), Temporal runs it again and the new decision replaces the old one. The replaced
-- events are kept here, never silently dropped.
ALTER TABLE escalation_events
    ADD COLUMN run_id     text,
    ADD COLUMN decided_in bigint;

CREATE TABLE superseded_events (
    escalation_id text        NOT NULL,
    ticket_id     text        NOT NULL,
    seq           integer     NOT NULL,
    type          text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    payload       jsonb       NOT NULL,
    run_id        text        NOT NULL,
    decided_in    bigint      NOT NULL,
    recorded_at   timestamptz NOT NULL,
    superseded_by bigint      NOT NULL,
    superseded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (escalation_id, run_id, decided_in, seq)
);
