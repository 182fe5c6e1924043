"""The simulator's Anthropic face: `POST /v1/messages` translated to and from the chat path, so
the same models, latencies, per-model faults (Retry-After included) and counters apply.

Like the real API it requires the `anthropic-version` and `x-api-key` headers (any key), takes
the system prompt as a top-level `system` string (or text blocks), requires `max_tokens`, and
answers `{"type": "message", "content": [{"type": "text", ...}], "stop_reason", "usage":
{"input_tokens", "output_tokens"}}`; errors are `{"type": "error", "error": {"type", "message"}}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from sluice.local.simulator import MalformedKind

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "api_error",
}


def error(status: int, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def header_problem(request: web.Request) -> web.Response | None:
    if not request.headers.get("anthropic-version"):
        return error(400, "anthropic-version: header is required")
    if not request.headers.get("x-api-key"):
        return error(401, "x-api-key: header is required")
    return None


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        if all(isinstance(t, str) for t in texts):
            return " ".join(t for t in texts if isinstance(t, str))
    return None


def to_chat_body(body: Any) -> dict[str, Any] | str:
    """The chat-completions body for a messages-API body, or what is wrong with it."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "the body must be a JSON object with a string 'model'"
    max_tokens = body.get("max_tokens")
    if type(max_tokens) is not int or max_tokens < 1:
        return "max_tokens: a positive integer is required"
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        return "messages: a non-empty array is required"
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _text(system)
        if text is None:
            return "system: must be a string or text blocks"
        messages.append({"role": "system", "content": text})
    for turn in turns:
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
            return "messages: each message needs role user or assistant (system goes in 'system')"
        converted = _turn(turn["role"], turn.get("content"))
        if converted is None:
            return "messages: content must be a string or text, tool_use or tool_result blocks"
        messages.extend(converted)
    chat: dict[str, Any] = {"model": body["model"], "messages": messages, "max_tokens": max_tokens}
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        chat["tools"] = [
            {"type": "function", "function": {"name": t.get("name"), "parameters": t.get("input_schema")}}
            for t in tools
            if isinstance(t, dict)
        ]
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "tool":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif isinstance(choice, dict) and choice.get("type") == "none":
            chat["tool_choice"] = "none"
    if body.get("stream") is True:
        chat["stream"] = True
    return chat


def _turn(role: str, content: Any) -> list[dict[str, Any]] | None:
    """Chat messages for one messages-API turn: tool_result blocks become tool messages,
    tool_use blocks an assistant's tool calls, text blocks the text."""
    if not isinstance(content, list) or all(isinstance(b, dict) and b.get("type") == "text" for b in content):
        text = _text(content)
        return None if text is None else [{"role": role, "content": text}]
    if not all(isinstance(b, dict) for b in content):
        return None
    found: list[dict[str, Any]] = []
    texts = [b["text"] for b in content if b.get("type") == "text" and isinstance(b.get("text"), str)]
    calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {"name": b.get("name"), "arguments": orjson.dumps(b.get("input")).decode()},
        }
        for b in content
        if b.get("type") == "tool_use"
    ]
    for block in content:
        if block.get("type") == "tool_result":
            result = _text(block.get("content", ""))
            found.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": result or ""})
    if texts or calls:
        message: dict[str, Any] = {"role": role, "content": " ".join(texts)}
        if calls:
            message["tool_calls"] = calls
        found.append(message)
    return found or None


def to_message(reply: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion reply as a messages-API message."""
    choice = reply["choices"][0]
    usage = reply["usage"]
    message = choice["message"]
    blocks: list[dict[str, Any]] = (
        [{"type": "text", "text": message["content"]}] if message["content"] else []
    )
    for call in message.get("tool_calls") or []:
        function = call["function"]
        arguments = orjson.loads(function["arguments"])
        blocks.append(
            {
                "type": "tool_use",
                "id": call["id"].replace("call_", "toolu_"),
                "name": function["name"],
                "input": arguments,
            }
        )
    stop = {"length": "max_tokens", "tool_calls": "tool_use"}.get(choice["finish_reason"], "end_turn")
    return {
        "id": reply["id"].replace("simcmpl-", "msg_sim"),
        "type": "message",
        "role": "assistant",
        "model": reply["model"],
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]},
    }


def malformed(message: dict[str, Any], kind: MalformedKind) -> bytes:
    """A 200 body a client must reject: cut-off JSON, or a message without content."""
    if kind == "missing_choices":
        return orjson.dumps({k: v for k, v in message.items() if k != "content"})
    whole = orjson.dumps(message)
    return whole[: len(whole) // 2]
