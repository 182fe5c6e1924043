"""Alert rules as configuration (`alert_rules` in settings / sluice.toml).

Kept free of other Sluice imports: the settings class embeds these models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AlertMetricName = Literal[
    "error_rate", "p95_latency_ms", "cost_per_hour", "hallucination_rate", "consumer_lag"
]
Severity = Literal["info", "warning", "critical"]


class AlertRule(BaseModel):
    """Fire while `metric` over the last `window_minutes` is above (or below) `threshold`.

    Warehouse metrics are read from the per-minute rollups, so a window starts at a minute
    boundary; consumer_lag is the latest measured value and ignores the window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")
    metric: AlertMetricName
    threshold: float
    window_minutes: int = Field(default=5, ge=1, le=7 * 24 * 60)
    above: bool = Field(default=True, description="True: fire when value > threshold; False: < threshold")
    severity: Severity = "warning"

    def breached(self, value: float | None) -> bool:
        """No data (None) never fires: an idle system is not an incident."""
        if value is None:
            return False
        return value > self.threshold if self.above else value < self.threshold


def default_alert_rules() -> list[AlertRule]:
    return [
        AlertRule(
            name="error-rate", metric="error_rate", threshold=0.05, window_minutes=5, severity="critical"
        ),
        AlertRule(name="p95-latency", metric="p95_latency_ms", threshold=10_000, window_minutes=5),
        AlertRule(name="cost-per-hour", metric="cost_per_hour", threshold=10.0, window_minutes=60),
        AlertRule(name="hallucination-rate", metric="hallucination_rate", threshold=0.1, window_minutes=15),
        AlertRule(name="consumer-lag", metric="consumer_lag", threshold=10_000, severity="critical"),
    ]
