"""One event per stage per request, on `sluice.events`, mirrored into ClickHouse."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.common import ErrorCode, Stage, Status, WireModel


class RequestSummary(WireModel):
    """Carried only by the event that ends a request; becomes its `sluice.requests` row."""

    received_at: datetime
    finished_at: datetime
    status: Status
    latency_ms: float
    groundedness: float | None = None
    hallucination: bool | None = None
    schema_valid: bool | None = None
    route: str = ""
    arm: str = ""


class Event(WireModel):
    event_id: str = Field(description="Deterministic per (request_id, stage): redelivery reuses it.")
    request_id: str
    correlation_id: str
    tenant: str
    stage: Stage
    status: str = Field(description="ok | rejected | blocked | failed | duplicate")
    ts: datetime
    duration_ms: float = 0.0
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False
    cache_savings_usd: float = 0.0
    routing_savings_usd: float = 0.0
    error_code: ErrorCode | None = None
    flags: list[str] = Field(default_factory=list)
    attributes: dict[str, str] = Field(default_factory=dict)
    summary: RequestSummary | None = None
