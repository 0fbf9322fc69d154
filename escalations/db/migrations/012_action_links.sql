-- Signed action links (and the Slack buttons carrying their tokens) act once: one row per
-- link used, keyed by the token's id. A row is 'pending' while its command is on the way
-- (a claim older than a minute is taken over: the API died mid-way) and 'done' once the
-- escalation took it; a refused command leaves no row.
CREATE TABLE action_link_uses (
    token_id      text        PRIMARY KEY,
    escalation_id text        NOT NULL,
    ticket_id     text        NOT NULL,
    action        text        NOT NULL,
    actor         text        NOT NULL,
    via           text        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('pending', 'done')),
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    done_at       timestamptz,
    outcome       text,
    expires_at    timestamptz NOT NULL
);

CREATE INDEX action_link_uses_escalation ON action_link_uses (escalation_id);
CREATE INDEX action_link_uses_expires ON action_link_uses (expires_at);
