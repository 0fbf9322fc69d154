-- Idempotency keys of the HTTP API (POST /escalations with an Idempotency-Key header).
-- A row is claimed before the start (response NULL) and completed with the response;
-- an identical retry replays it, the same key with another body is refused.
CREATE TABLE api_idempotency (
    scope          text        NOT NULL,  -- e.g. 'POST /escalations'
    key            text        NOT NULL,
    request_sha256 text        NOT NULL,  -- of the canonical JSON body
    status_code    integer,
    response       jsonb,
    created_at     timestamptz NOT NULL,
    completed_at   timestamptz,
    PRIMARY KEY (scope, key)
);
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);
