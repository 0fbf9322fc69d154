-- The projection of Temporal history (activities/store.py, project_events).
--
-- Repeats are derived from the read model itself (same fingerprint opened within the
-- window before), recomputed for every row of a fingerprint when one of them is opened,
-- so the live projection and a rebuild agree whatever order escalations arrive in.
ALTER TABLE escalations
    ADD COLUMN repeat_window_seconds double precision NOT NULL DEFAULT 2592000,
    ADD COLUMN ended_reason          text;

-- A run may open while PostgreSQL is down: its policy version is then registered by the
-- projection from the digest alone.
ALTER TABLE policy_versions ALTER COLUMN document DROP NOT NULL;

-- The KPI facts count a run that failed or was terminated as ended, not as open.
CREATE OR REPLACE VIEW escalation_kpi_facts AS
SELECT e.escalation_id,
       e.ticket_id,
       e.customer_id,
       e.opened_at,
       e.priority,
       e.kind,
       e.category,
       e.highest_level,
       e.highest_rank,
       e.status,
       e.resolved_at IS NOT NULL AS resolved,
       (e.resolved_at IS NOT NULL
        AND (e.breached_at IS NULL OR e.breached_at > e.resolved_at)) AS resolved_within_sla,
       CASE WHEN e.resolved_at IS NOT NULL THEN e.resolution_seconds END AS resolution_seconds,
       e.repeat_count > 0 AS is_repeat,
       c.score AS csat_score,
       c.received_at AS csat_received_at,
       e.status IN ('failed', 'terminated') AS ended_without_closing
  FROM escalations e
  LEFT JOIN csat_responses c ON c.escalation_id = e.escalation_id;
