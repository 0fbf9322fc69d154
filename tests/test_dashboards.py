"""The Grafana dashboards and Prometheus alerts under docker/ ask for what exists.

Every Prometheus query names only the contract's metrics (DESIGN.md, "Metrics") or the Temporal
SDK's own; every SQL query reads the KPI view ``escalation_kpi_facts`` only and runs on the
migrated schema (Grafana's macros expanded as Grafana would), so a renamed column fails here
rather than as an empty panel in production.
"""

from __future__ import annotations

import json
import re

import asyncpg
import pytest
import yaml

from tests.helpers.paths import ROOT

DOCKER = ROOT / "docker"
DASHBOARDS = sorted((DOCKER / "grafana" / "dashboards").glob("*.json"))

CONTRACT_METRICS = {
    "escalation_events_total", "escalation_notifications_total", "escalation_projection_lag_seconds",
    "escalations_open", "escalations_breached",
}
CONTRACT_HISTOGRAMS = {"escalation_deadline_lateness_seconds"}
# The Temporal SDK's (Core-based SDKs: docs.temporal.io/references/sdk-metrics), as the worker
# exports them: durations in seconds, no unit suffix, counters without `_total`.
SDK_METRICS = {
    "temporal_workflow_task_execution_failed", "temporal_workflow_completed", "temporal_workflow_failed",
    "temporal_activity_execution_failed", "temporal_worker_task_slots_available", "temporal_request_failure",
    "temporal_num_pollers", "temporal_sticky_cache_hit", "temporal_sticky_cache_miss",
}
SDK_HISTOGRAMS = {
    "temporal_workflow_task_schedule_to_start_latency", "temporal_workflow_task_execution_latency",
    "temporal_activity_schedule_to_start_latency", "temporal_activity_execution_latency",
    "temporal_workflow_endtoend_latency", "temporal_request_latency",
}
ALLOWED_SERIES = CONTRACT_METRICS | SDK_METRICS | {
    f"{histogram}_{suffix}" for histogram in CONTRACT_HISTOGRAMS | SDK_HISTOGRAMS for suffix in ("bucket", "sum", "count")
}
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile", "topk", "bottomk",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "abs", "clamp_min", "clamp_max", "vector", "scalar", "humanizeDuration",
}
KPI_VIEW = "escalation_kpi_facts"


def metric_names(expression: str) -> set[str]:
    """The series a PromQL expression reads: what is left once strings, label matchers, ranges,
    label lists, functions and keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expression)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    words = re.findall(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()", text)
    return {word for word in words if word not in PROMQL_WORDS}


def dashboard(name: str) -> dict:
    return json.loads((DOCKER / "grafana" / "dashboards" / name).read_text())


def queries(board: dict) -> list[tuple[str, str, dict]]:
    """(panel title, datasource uid, target) of every query of every panel."""
    found = []
    for panel in board["panels"]:
        assert panel.get("targets"), f"{panel['title']} has no query"
        for target in panel["targets"]:
            found.append((panel["title"], (target.get("datasource") or panel["datasource"])["uid"], target))
    return found


def provisioned_datasources() -> dict[str, dict]:
    config = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/datasources.yml").read_text())
    return {source["uid"]: source for source in config["datasources"]}


def test_the_two_dashboards_are_there_and_well_formed() -> None:
    boards = {path.name: json.loads(path.read_text()) for path in DASHBOARDS}
    assert {board["title"] for board in boards.values()} == {"SLA operations", "Escalation KPIs"}
    assert len({board["uid"] for board in boards.values()}) == len(boards)
    sources = provisioned_datasources()
    for name, board in boards.items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for title, uid, _target in queries(board):
            assert uid in sources, f"{name}: {title} uses datasource {uid}, which is not provisioned"


def test_every_prometheus_query_names_a_known_metric() -> None:
    sources = provisioned_datasources()
    for path in DASHBOARDS:
        for title, uid, target in queries(json.loads(path.read_text())):
            if sources[uid]["type"] != "prometheus":
                continue
            names = metric_names(target["expr"])
            assert names, f"{path.name}: {title}: no metric in {target['expr']}"
            assert names <= ALLOWED_SERIES, f"{path.name}: {title}: unknown {names - ALLOWED_SERIES}"


def test_the_sla_dashboard_shows_what_operations_watch() -> None:
    expressions = [target["expr"] for _t, _u, target in queries(dashboard("sla-operations.json"))]
    joined = "\n".join(expressions)
    assert re.search(r"by \(level\) \(escalations_open\)", joined)
    assert re.search(r"by \(priority\) \(escalations_open\)", joined)
    assert "escalations_breached" in joined and 'type="sla_breached"' in joined
    for quantile in ("0.5", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, clock) (rate(escalation_deadline_lateness_seconds_bucket" in joined
    assert 'escalation_notifications_total{outcome="failed"}' in joined
    assert "temporal_workflow_task_schedule_to_start_latency_bucket" in joined
    assert "escalation_projection_lag_seconds" in joined


def test_the_alerts_name_known_metrics() -> None:
    rules = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 5
    for rule in alerts:
        names = metric_names(rule["expr"])
        assert names and names <= ALLOWED_SERIES | {"up"}, f"{rule['alert']}: {names - ALLOWED_SERIES}"
        assert rule["annotations"]["summary"]


def grafana_sql(sql: str) -> str:
    """The SQL Grafana sends for a panel's query, for a fixed 30-day range."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)",
                 r"\1 BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-31T00:00:00Z'", sql)
    sql = re.sub(r"\$__timeGroupAlias\((\w+),\s*'1d'\)", "date_trunc('day', \\1) AS \"time\"", sql)
    assert "$__" not in sql, f"a Grafana macro the test does not expand: {sql}"
    return sql


async def test_every_kpi_query_reads_the_view_and_runs(database_url: str) -> None:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        columns = {row["column_name"] for row in await connection.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1", KPI_VIEW)}
        assert columns, f"{KPI_VIEW} does not exist"
        seen: set[str] = set()
        sources = provisioned_datasources()
        for path in DASHBOARDS:
            for title, uid, target in queries(json.loads(path.read_text())):
                if sources[uid]["type"] != "grafana-postgresql-datasource":
                    continue
                sql = target["rawSql"]
                relations = set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", sql, re.IGNORECASE))
                assert relations == {KPI_VIEW}, f"{title} reads {relations}"
                named = {word for word in re.findall(r"\b\w+\b", sql) if word in columns}
                assert named, f"{title} names no column of {KPI_VIEW}"
                seen |= named
                await connection.fetch(grafana_sql(sql))  # a missing column or bad SQL raises here
    finally:
        await connection.close()
    # The KPIs: % within SLA, MTTR, CSAT, repeats, volume by category over time.
    assert {"resolved_within_sla", "resolution_seconds", "csat_score", "is_repeat", "category", "opened_at"} <= seen


def test_the_kpi_reader_may_read_the_view_only() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grants = compose["services"]["grafana-reader"]["command"][0]
    assert re.findall(r"GRANT SELECT ON (\w+)", grants) == [KPI_VIEW]
    postgres = provisioned_datasources()["escalations-postgres"]
    assert postgres["user"] == "grafana_reader"
    assert postgres["secureJsonData"]["password"] == "$__file{/run/secrets/grafana_db_password}"


@pytest.mark.parametrize("expression, expected", [
    ('sum by (le, clock) (rate(escalation_deadline_lateness_seconds_bucket{clock="ack"}[5m]))',
     {"escalation_deadline_lateness_seconds_bucket"}),
    ("max(escalation_projection_lag_seconds) > 300", {"escalation_projection_lag_seconds"}),
    ("sum(rate(made_up_metric[5m]))", {"made_up_metric"}),
])
def test_metric_names_are_read_from_promql(expression: str, expected: set[str]) -> None:
    assert metric_names(expression) == expected
