-- The calling principal (issue #15): who acknowledged, as the events record it (``via``,
-- e.g. api:ops-bot or cli:dana), beside the self-declared acknowledged_by.
ALTER TABLE escalations ADD COLUMN acknowledged_via text;
