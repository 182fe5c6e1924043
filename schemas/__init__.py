"""Wire contracts: the pydantic form of ../shared/contract.md. Nothing here does I/O."""

from schemas.admission import Admission, Settlement
from schemas.advice import RouteAdvice
from schemas.alert import Alert
from schemas.common import (
    ChatMessage,
    Checks,
    ContextPassage,
    ErrorCode,
    ErrorInfo,
    NamedToolChoice,
    ResponseFormat,
    Stage,
    Status,
    Tool,
    ToolCall,
    ToolCallFunction,
    ToolChoice,
    ToolFunction,
    Usage,
    WireModel,
)
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope, Inference, RouteDecision
from schemas.event import Event, RequestSummary
from schemas.feedback import Feedback
from schemas.request import Request
from schemas.response import Response
from schemas.stream import StreamChunk

# Every top-level message type, by the file name its JSON Schema is written to.
WIRE_MESSAGES: dict[str, type[WireModel]] = {
    "request": Request,
    "response": Response,
    "envelope": Envelope,
    "event": Event,
    "feedback": Feedback,
    "deadletter": DeadLetter,
    "route_advice": RouteAdvice,
    "admission": Admission,
    "alert": Alert,
    "stream_chunk": StreamChunk,
}

__all__ = [
    "WIRE_MESSAGES",
    "Admission",
    "Alert",
    "ChatMessage",
    "Checks",
    "ContextPassage",
    "DeadLetter",
    "Envelope",
    "ErrorCode",
    "ErrorInfo",
    "Event",
    "Feedback",
    "Inference",
    "NamedToolChoice",
    "Request",
    "RequestSummary",
    "Response",
    "ResponseFormat",
    "RouteAdvice",
    "RouteDecision",
    "Settlement",
    "Stage",
    "Status",
    "StreamChunk",
    "Tool",
    "ToolCall",
    "ToolCallFunction",
    "ToolChoice",
    "ToolFunction",
    "Usage",
    "WireModel",
]
