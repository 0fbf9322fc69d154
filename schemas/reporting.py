"""KPI report and CSAT models (the HTTP API, the CLI and db/ share them)."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field, field_validator

from schemas.policy import NO_CONTRACT, Priority
from schemas.text import reject_nul


class KpiFilters(BaseModel):
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    priority: Priority | None = None
    category: str | None = Field(default=None, min_length=1, max_length=100)
    contract: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64,
        description=f"Only escalations under this contract key; {NO_CONTRACT!r}: those under no contract.",
    )


class Frequency(BaseModel):
    key: str
    escalations: int


class ContractKpis(BaseModel):
    """The SLA and resolution KPIs of the escalations under one contract (None: under none)."""

    contract: str | None
    escalations: int
    resolved: int
    resolved_within_sla: int
    resolved_within_sla_share: float | None = Field(description="resolved within SLA / resolved")
    mean_time_to_resolution_seconds: float | None = Field(description="net of pauses")
    p90_time_to_resolution_seconds: float | None = Field(description="net of pauses")
    csat_average: float | None
    csat_responses: int


class KpiReport(BaseModel):
    filters: KpiFilters
    escalations: int
    resolved: int
    resolved_within_sla: int
    resolved_within_sla_share: float | None = Field(description="resolved within SLA / resolved")
    mean_time_to_resolution_seconds: float | None = Field(description="net of pauses")
    p90_time_to_resolution_seconds: float | None = Field(description="net of pauses")
    csat_average: float | None
    csat_responses: int
    csat_response_rate: float | None = Field(description="responses / resolved")
    repeat_escalations: int = Field(description="escalations with an earlier one of the same customer and issue")
    ended_without_closing: int = Field(default=0, description="runs that failed or were terminated")
    by_category: list[Frequency]
    by_level_reached: list[Frequency]
    by_kind: list[Frequency]
    by_priority: list[Frequency]
    by_contract: list[ContractKpis] = Field(
        default_factory=list, description="per contract key (null: under no contract), most escalations first")


class WeeklyKpis(BaseModel):
    """The trend KPIs of the escalations opened in one ISO week (Monday 00:00 UTC onwards)."""

    week: str = Field(description="ISO year and week, e.g. 2026-W10")
    week_start: date = Field(description="the week's Monday")
    escalations: int = Field(description="opened that week")
    resolved: int
    resolved_within_sla: int
    resolved_within_sla_share: float | None = Field(description="resolved within SLA / resolved")
    mean_time_to_resolution_seconds: float | None = Field(description="net of pauses")


class CsatSubmission(BaseModel):
    score: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=5000)

    @field_validator("comment", mode="before")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        return reject_nul(value)


class CsatRecord(BaseModel):
    escalation_id: str
    ticket_id: str
    score: int
    comment: str | None
    received_at: AwareDatetime
