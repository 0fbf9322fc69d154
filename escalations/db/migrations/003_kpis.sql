-- KPIs over the read model (db/kpis.py). One row per escalation with the facts every KPI
-- needs, so the API, the CLI and ad-hoc SQL share one definition.
--
--   resolved             resolved_at is set (status resolved or closed)
--   resolved_within_sla  resolved, and no SLA breach at or before the resolution
--   resolution_seconds   resolved_at - opened_at minus paused time (set by the resolved event)
--   is_repeat            an earlier escalation of the same customer and issue (fingerprint)
--                        was opened within the policy's repeat_window
--   csat_score           the customer's 1-5 score, if one was recorded

CREATE VIEW escalation_kpi_facts AS
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
       c.received_at AS csat_received_at
  FROM escalations e
  LEFT JOIN csat_responses c ON c.escalation_id = e.escalation_id;

-- The KPI filters: a period on opened_at, optionally narrowed by priority or category.
CREATE INDEX escalations_priority_opened ON escalations (priority, opened_at);
CREATE INDEX escalations_category_opened ON escalations (category, opened_at);
