"""The one answer every accepted request gets, on its `reply_to` topic (contract: Response)."""

from __future__ import annotations

from pydantic import Field

from schemas.common import Checks, ErrorInfo, Status, ToolCall, Usage, WireModel


class Response(WireModel):
    correlation_id: str
    request_id: str
    tenant: str
    status: Status
    model: str | None = None
    content: str | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, description="Calls the model asked for")
    finish_reason: str | None = Field(default=None, description="stop, length, tool_calls, content_filter")
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    cached: bool = False
    latency_ms: float = 0.0
    checks: Checks = Field(default_factory=Checks)
    error: ErrorInfo | None = None
