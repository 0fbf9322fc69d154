-- Customer contracts (the policy's `contracts:`): the key of the contract whose SLA targets
-- an escalation runs under, chosen when it opens; NULL when none matched (the policy's own
-- priorities), and for every escalation opened before contracts existed.
ALTER TABLE escalations ADD COLUMN contract text;

-- The KPIs filter and group by it (db/kpis.py).
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
       e.status IN ('failed', 'terminated') AS ended_without_closing,
       e.contract
  FROM escalations e
  LEFT JOIN csat_responses c ON c.escalation_id = e.escalation_id;

CREATE INDEX escalations_contract_opened ON escalations (contract, opened_at);
