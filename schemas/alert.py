"""Alert transitions on `sluice.alerts` (key: the rule name): one message when a rule starts
firing and one when it resolves, never one per evaluation."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.common import WireModel


class Alert(WireModel):
    rule: str = Field(min_length=1, max_length=64)
    metric: str = Field(
        description="error_rate | p95_latency_ms | cost_per_hour | hallucination_rate | consumer_lag"
    )
    state: Literal["firing", "resolved"]
    severity: Literal["info", "warning", "critical"]
    value: float | None = Field(description="The metric when the transition was decided; null: no data")
    threshold: float
    above: bool = Field(description="True: the rule fires above the threshold")
    window_minutes: int = Field(ge=1)
    since: datetime = Field(description="When the rule started firing")
    ts: datetime
    message: str = Field(max_length=500)
