"""The message that travels between stages (validated -> sanitized -> routed -> inferred).

One envelope type for all four hops: each stage fills in its own section, so a later stage
sees everything earlier stages decided without a second lookup.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.common import ChatMessage, ErrorInfo, ToolCall, Usage, WireModel
from schemas.request import Request


class RouteDecision(WireModel):
    model: str
    reason: str
    provider_kind: str = "openai"
    route: str = Field(default="", description="Name of the routing rule or tier that chose the model")
    tier: str | None = None
    fallbacks: list[str] = Field(default_factory=list, description="Models to try in order if `model` fails")
    arm: str | None = Field(default=None, description="Experiment arm that served it: control | challenger")
    estimated_prompt_tokens: int = Field(default=0, ge=0)
    baseline_model: str | None = Field(
        default=None, description="The route's priciest candidate, the base of routing savings"
    )


class Inference(WireModel):
    """What the model call produced, or why it failed (error set, content None)."""

    model: str
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    model_latency_ms: float = 0.0
    attempts: int = 1
    error: ErrorInfo | None = None
    cached: bool = False
    cache_savings_usd: float = Field(default=0.0, ge=0, description="What a cache hit would have cost")
    routing_savings_usd: float = Field(default=0.0, description="Baseline model's cost minus the actual cost")
    streamed: bool = Field(default=False, description="Text was released to the client as it came")
    ttft_ms: float | None = Field(default=None, ge=0, description="Call start to the model's first token")
    stream_cut: str | None = Field(default=None, description="The check that ended the stream early")


class Envelope(WireModel):
    request_id: str
    correlation_id: str
    tenant: str
    reply_to: str
    received_at: datetime
    deadline_at: datetime
    request: Request = Field(description="The validated request, api_key already removed.")
    flags: list[str] = Field(default_factory=list)
    route: RouteDecision | None = None
    inference: Inference | None = None
    retries: int = Field(default=0, ge=0, description="Answers sent back to another model so far")
    repair_attempts: int = Field(default=0, ge=0, description="Re-asks with a validation error so far")
    tried_models: list[str] = Field(default_factory=list)
    earlier_usage: Usage = Field(
        default_factory=Usage, description="Tokens of this request's earlier model calls (retries, repairs)"
    )
    earlier_cost_usd: float = Field(default=0.0, ge=0, description="Cost of those earlier calls")
    redactions: dict[str, str] = Field(
        default_factory=dict,
        description="Placeholder -> original, only when the tenant restores PII in answers; "
        "it travels inside this request's envelope and nowhere else",
    )
    followup: list[ChatMessage] = Field(
        default_factory=list, description="Turns appended to the request for a repair re-ask"
    )

    @property
    def attempt(self) -> int:
        """0 for the first model call; distinguishes the events of later calls."""
        return self.retries + self.repair_attempts
