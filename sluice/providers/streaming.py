"""Reading a model's streamed reply: OpenAI's `chat.completion.chunk` server-sent events and
Anthropic's messages-API stream events, line by line, into text deltas and, at the end, the
whole Completion (content, tool calls, finish reason, usage).

Pure parsers, fed one SSE line at a time; the HTTP side is ChatClient.stream (openai_http).
Anything off-protocol raises ProviderError (retryable, like a broken non-streamed reply).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from schemas import ErrorCode, ToolCall
from sluice.providers.calls import Completion, ProviderError

_ANTHROPIC_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


@dataclass(frozen=True)
class StreamPart:
    """One step of a streamed call: a text delta, or (last) the whole completion."""

    text: str = ""
    done: Completion | None = None


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class StreamReader:
    """Accumulates one streamed reply. `feed(line)` returns the text delta the line carried."""

    model: str
    kind: str = "openai"
    content: list[str] = field(default_factory=list)
    calls: dict[int, _Call] = field(default_factory=dict)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ended: bool = False

    def feed(self, line: str) -> str:
        line = line.strip()
        if not line.startswith("data:"):
            return ""  # `event:` names, comments and blank separators carry nothing by themselves
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            self.ended = True
            return ""
        try:
            event = orjson.loads(data)
            if not isinstance(event, dict):
                raise TypeError(f"event is a {type(event).__name__}")
            text = self._anthropic(event) if self.kind == "anthropic" else self._openai(event)
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ProviderError(
                ErrorCode.MODEL_UNAVAILABLE, f"{self.model}: malformed stream event ({exc!r})", retryable=True
            ) from exc
        if text:
            self.content.append(text)
        return text

    def _openai(self, event: dict[str, Any]) -> str:
        if isinstance(event.get("usage"), dict):
            self.prompt_tokens = int(event["usage"].get("prompt_tokens", 0))
            self.completion_tokens = int(event["usage"].get("completion_tokens", 0))
        choices = event.get("choices") or []
        if not choices:
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta") or {}
        for piece in delta.get("tool_calls") or []:
            call = self.calls.setdefault(int(piece.get("index", 0)), _Call())
            call.id = piece.get("id") or call.id
            function = piece.get("function") or {}
            call.name = function.get("name") or call.name
            call.arguments += function.get("arguments") or ""
        text = delta.get("content")
        return text if isinstance(text, str) else ""

    def _anthropic(self, event: dict[str, Any]) -> str:
        kind = event["type"]
        if kind == "message_start":
            self.prompt_tokens = int(event["message"].get("usage", {}).get("input_tokens", 0))
        elif kind == "content_block_start" and event["content_block"].get("type") == "tool_use":
            block = event["content_block"]
            self.calls[int(event["index"])] = _Call(block["id"], block["name"])
        elif kind == "content_block_delta":
            delta = event["delta"]
            if delta.get("type") == "input_json_delta":
                self.calls[int(event["index"])].arguments += delta.get("partial_json", "")
            elif delta.get("type") == "text_delta":
                return str(delta["text"])
        elif kind == "message_delta":
            stop = event.get("delta", {}).get("stop_reason")
            self.finish_reason = _ANTHROPIC_STOP.get(stop) if isinstance(stop, str) else None
            self.completion_tokens = int(event.get("usage", {}).get("output_tokens", 0))
        elif kind == "message_stop":
            self.ended = True
        elif kind == "error":
            raise ValueError(f"error event: {event.get('error')}")
        return ""

    @property
    def text(self) -> str:
        return "".join(self.content)

    def completion(self, latency_ms: float, prompt_estimate: int = 0) -> Completion:
        """The whole reply; token counts the server did not send are estimated (4 chars each)."""
        if not self.ended:
            raise ProviderError(
                ErrorCode.MODEL_UNAVAILABLE, f"{self.model}: the stream ended early", retryable=True
            )
        try:
            calls = tuple(
                ToolCall.model_validate(
                    {"id": c.id, "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                )
                for _, c in sorted(self.calls.items())
            )
        except ValidationError as exc:
            raise ProviderError(
                ErrorCode.MODEL_UNAVAILABLE, f"{self.model}: malformed streamed tool call", retryable=True
            ) from exc
        return Completion(
            content=self.text,
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens if self.prompt_tokens is not None else prompt_estimate,
            completion_tokens=self.completion_tokens
            if self.completion_tokens is not None
            else estimate_tokens(self.text),
            latency_ms=latency_ms,
            tool_calls=calls,
        )


def estimate_tokens(text: str) -> int:
    """Tokens a text is billed as when the server did not say: 4 characters each."""
    return math.ceil(len(text) / 4)


def prompt_estimate(payload: dict[str, Any]) -> int:
    return sum(estimate_tokens(str(m.get("content") or "")) for m in payload.get("messages", []))
