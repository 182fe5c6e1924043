"""The request a client publishes on `sluice.requests` (contract: Request)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from schemas.common import ChatMessage, ContextPassage, ResponseFormat, Tool, ToolChoice, WireModel

TENANT_PATTERN = r"^[a-z0-9_-]{1,64}$"


class Request(WireModel):
    """Only correlation_id, tenant and messages are required; limits that depend on
    configuration (sizes, reply prefix, deadline bounds) are checked by the validate stage."""

    correlation_id: str = Field(min_length=1, max_length=128)
    tenant: str = Field(pattern=TENANT_PATTERN)
    api_key: SecretStr | None = None
    reply_to: str | None = Field(default=None, min_length=1, max_length=249)
    model: str = Field(default="auto", min_length=1, max_length=128)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    context: list[ContextPassage] = Field(default_factory=list)
    response_format: ResponseFormat | None = None
    tools: list[Tool] = Field(default_factory=list, max_length=128)
    tool_choice: ToolChoice | None = Field(default=None, description="Default: auto with tools")
    stop: list[str] = Field(default_factory=list, max_length=4, description="Stop sequences")
    stream: bool = Field(
        default=False, description="Send the answer's text as StreamChunk records while it is written"
    )
    metadata: dict[str, str] = Field(default_factory=dict)
    deadline_ms: int = Field(default=30_000, ge=1)
