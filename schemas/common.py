"""Building blocks shared by several wire messages (the contract's vocabulary)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class WireModel(BaseModel):
    """Base of every wire message: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


class Stage(StrEnum):
    VALIDATE = "validate"
    SANITIZE = "sanitize"
    ROUTE = "route"
    INFER = "infer"
    VALIDATE_RESPONSE = "validate_response"


class Status(StrEnum):
    OK = "ok"
    REJECTED = "rejected"
    BLOCKED = "blocked"
    FAILED = "failed"


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate_limited"
    BUDGET_EXCEEDED = "budget_exceeded"
    PROMPT_INJECTION = "prompt_injection"
    POLICY_VIOLATION = "policy_violation"
    MODEL_UNAVAILABLE = "model_unavailable"
    TIMEOUT = "timeout"
    RESPONSE_INVALID = "response_invalid"
    INTERNAL = "internal"


class ToolFunction(WireModel):
    """A function the model may call: its name, what it does, and its JSON Schema parameters."""

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = Field(default=None, max_length=4096)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(WireModel):
    type: Literal["function"] = "function"
    function: ToolFunction


class ToolCallFunction(WireModel):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    arguments: str = Field(description="The arguments as a JSON text, exactly as the model wrote them")


class ToolCall(WireModel):
    """A call the model asked for; the client answers it with a `tool` message of the same id."""

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ToolChoiceFunction(WireModel):
    name: str = Field(pattern=TOOL_NAME_PATTERN)


class NamedToolChoice(WireModel):
    """Force the model to call this one function."""

    type: Literal["function"] = "function"
    function: ToolChoiceFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ChatMessage(WireModel):
    """One turn. An assistant turn may carry `tool_calls` (its content may then be empty); a
    `tool` turn answers one of them (`tool_call_id`) and is untrusted input, like `context`."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _tool_fields_fit_the_role(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls: only an assistant message carries tool calls")
        if (self.tool_call_id is not None) != (self.role == "tool"):
            raise ValueError("tool_call_id: required on a tool message and only there")
        return self


class ContextPassage(WireModel):
    id: str = Field(min_length=1, max_length=256)
    text: str


class ResponseFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None


class Usage(WireModel):
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)


class Checks(WireModel):
    groundedness: float | None = None
    hallucination: bool | None = None
    schema_valid: bool | None = None
    flags: list[str] = Field(default_factory=list)


class ErrorInfo(WireModel):
    code: ErrorCode
    message: str
    stage: Stage
    retry_after_s: float | None = Field(
        default=None, ge=0, description="rate_limited / budget_exceeded: when a retry may succeed"
    )
