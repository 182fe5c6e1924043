"""Building blocks shared by several wire messages (the contract's vocabulary)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


class ChatMessage(WireModel):
    role: Literal["system", "user", "assistant"]
    content: str


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
