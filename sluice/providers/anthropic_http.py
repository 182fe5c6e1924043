"""Anthropic's messages API (`POST {base_url}/v1/messages`) for catalog entries of kind
"anthropic": the request translation and the reply parser. The HTTP call itself is the shared
ChatClient's (openai_http), so both kinds share connection pools, deadlines and error handling.

Differences from OpenAI handled here: system turns go in a separate top-level `system` field;
`max_tokens` is required; there is no JSON mode, so a JSON response_format becomes an
instruction in the system prompt; usage is `input_tokens`/`output_tokens`; `stop_reason`
end_turn/stop_sequence maps to finish_reason "stop", max_tokens to "length" and tool_use to
"tool_calls". Tools: OpenAI's `tools` become `{name, description, input_schema}`, tool_choice
required becomes `any`; an assistant's tool calls become `tool_use` blocks (arguments parsed from
JSON text) and `tool` turns become `tool_result` blocks in a user turn; `stop` is `stop_sequences`.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import SecretStr

from schemas import ErrorCode, ToolCall
from sluice.providers.calls import Completion, ProviderError

API_VERSION = "2023-06-01"
JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else."
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def messages_url(root: str) -> str:
    """`{base_url}/v1/messages`, whether the configured base URL ends in /v1 or not."""
    return f"{root.rstrip('/').removesuffix('/v1')}/v1/messages"


def headers(key: SecretStr | None) -> dict[str, str]:
    found = {"content-type": "application/json", "anthropic-version": API_VERSION}
    if key is not None:
        found["x-api-key"] = key.get_secret_value()
    return found


def messages_payload(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """The messages-API body for an OpenAI-style chat payload (see agents.infer.chat_payload)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in chat["messages"]:
        if message["role"] == "system":
            system.append(message["content"])
            continue
        role, blocks = _blocks(message)
        if turns and turns[-1]["role"] == role == "user" and _has_tool_result(turns[-1]):
            turns[-1]["content"].extend(blocks)  # parallel tool results answer in one user turn
        else:
            turns.append({"role": role, "content": blocks})
    response_format = chat.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        system.append(JSON_INSTRUCTION)
    body: dict[str, Any] = {
        "model": model,
        "messages": [_plain(turn) for turn in turns],
        "max_tokens": chat["max_tokens"],
        "temperature": min(float(chat.get("temperature", 1.0)), 1.0),  # Anthropic's range is 0..1
    }
    if system:
        body["system"] = "\n\n".join(system)
    if chat.get("tools"):
        body["tools"] = [_tool(tool["function"]) for tool in chat["tools"]]
        if "tool_choice" in chat:
            body["tool_choice"] = _tool_choice(chat["tool_choice"])
    if chat.get("stop"):
        body["stop_sequences"] = list(chat["stop"])
    if chat.get("stream"):
        body["stream"] = True
    return body


def _blocks(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(role, content blocks): tool calls become tool_use blocks, a tool result a user turn."""
    text = message.get("content") or ""
    if message["role"] == "tool":
        return "user", [{"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": text}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for call in message.get("tool_calls") or []:
        function = call["function"]
        blocks.append(
            {"type": "tool_use", "id": call["id"], "name": function["name"], "input": _arguments(function)}
        )
    return message["role"], blocks or [{"type": "text", "text": ""}]


def _arguments(function: dict[str, Any]) -> Any:
    """OpenAI's arguments are JSON text; Anthropic wants the object (kept as text if not JSON)."""
    try:
        value = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        return {"arguments": function.get("arguments")}
    return value if isinstance(value, dict) else {"value": value}


def _has_tool_result(turn: dict[str, Any]) -> bool:
    return any(block.get("type") == "tool_result" for block in turn["content"])


def _plain(turn: dict[str, Any]) -> dict[str, Any]:
    """A turn of one text block is sent as a plain string, as before tools existed."""
    blocks = turn["content"]
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return {"role": turn["role"], "content": blocks[0]["text"]}
    return turn


def _tool(function: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        found["description"] = function["description"]
    return found


def _tool_choice(choice: Any) -> dict[str, Any]:
    if isinstance(choice, dict):
        return {"type": "tool", "name": choice["function"]["name"]}
    return {"type": {"required": "any"}.get(choice, choice)}  # auto, none; required -> any


def parse_message(model: str, raw: bytes, latency_ms: float) -> Completion:
    """Read a messages-API reply; anything off-protocol is the provider's failure."""
    try:
        data = orjson.loads(raw)
        blocks = data["content"]
        if not isinstance(blocks, list):
            raise TypeError(f"content is a {type(blocks).__name__}, not a list")
        texts = [b["text"] for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("a text block's text is not a string")
        calls = tuple(
            tool_call(b["id"], b["name"], b.get("input"))
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "tool_use"
        )
        usage = data.get("usage") or {}
        if not isinstance(usage, dict):
            raise TypeError(f"usage is a {type(usage).__name__}, not an object")
        input_tokens = int(usage.get("input_tokens", 0))
        output_tokens = int(usage.get("output_tokens", 0))
        stop = data.get("stop_reason")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProviderError(
            ErrorCode.MODEL_UNAVAILABLE, f"{model}: malformed reply ({exc!r})", retryable=True
        ) from exc
    return Completion(
        content="".join(texts),
        finish_reason=_STOP_REASONS.get(stop) if isinstance(stop, str) else None,
        prompt_tokens=max(input_tokens, 0),
        completion_tokens=max(output_tokens, 0),
        latency_ms=latency_ms,
        tool_calls=calls,
    )


def tool_call(call_id: Any, name: Any, arguments: Any) -> ToolCall:
    """A tool_use block as an OpenAI tool call (arguments as JSON text); raises ValueError."""
    text = arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode()
    return ToolCall.model_validate({"id": call_id, "function": {"name": name, "arguments": text}})
