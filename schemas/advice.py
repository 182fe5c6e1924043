"""Routing advice from the feedback loop, on `sluice.route-advice` (key: `route|model`).

User ratings land in ClickHouse; the feedback evaluator turns a route's ratings into one
advice message per (route, model), and the router applies the newest advice it has seen.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.common import WireModel


class RouteAdvice(WireModel):
    route: str = Field(min_length=1, max_length=128, description="Rule name, as RouteDecision.route")
    model: str = Field(min_length=1, max_length=128)
    demote: bool = Field(description="True: prefer the route's other candidates over this model")
    satisfaction: float = Field(ge=-1, le=1, description="Mean rating over the window, -1..1")
    samples: int = Field(ge=0, description="Ratings the figure is based on")
    reason: str = Field(max_length=500, description="Human-readable; recorded in route_reason when applied")
    ts: datetime
