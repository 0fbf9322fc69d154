-- Idempotency-Keys belong to the principal that sent them (api:<token name>): the same key
-- from two callers is two keys, so callers never see or block each other's requests.
-- Keys stored before this have no principal ('') and are purged by housekeeping once their
-- TTL has passed.
ALTER TABLE api_idempotency ADD COLUMN principal text NOT NULL DEFAULT '';
ALTER TABLE api_idempotency DROP CONSTRAINT api_idempotency_pkey;
ALTER TABLE api_idempotency ADD PRIMARY KEY (principal, scope, key);
ALTER TABLE api_idempotency ALTER COLUMN principal DROP DEFAULT;
