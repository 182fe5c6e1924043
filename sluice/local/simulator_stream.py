"""The simulator's tool calls and token-by-token streaming, for both of its faces.

Tool calls: a request that offers `tools` (and does not say `tool_choice: "none"`) whose last
turn is not a tool result gets a call to the first tool (or the one tool_choice names), with
arguments filled from the tool's JSON Schema (strings from the user's last words, numbers 1,
booleans true), finish_reason "tool_calls". Once a tool result is the last turn, the model
answers in text that quotes it ("Reply to: <the result's first words> ...").

Streaming: the reply is cut into tokens of 4 characters (the simulator's tokenizer) and sent
one per event: the first after the call's latency (the first-token delay), each next one
`token_ms` later. OpenAI's face sends `chat.completion.chunk` events (tool-call arguments as
deltas too), Anthropic's the messages-API events (message_start ... message_stop).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

TOKEN_CHARS = 4


def wants_tool_call(body: dict[str, Any]) -> bool:
    tools = body.get("tools")
    messages = body.get("messages") or [{}]
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    return bool(tools) and body.get("tool_choice") != "none" and last.get("role") != "tool"


def tool_calls(body: dict[str, Any], last_words: list[str]) -> list[dict[str, Any]]:
    """The one call this request gets: the named tool, else the first offered."""
    tools = [
        t["function"] for t in body["tools"] if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    choice = body.get("tool_choice")
    named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    function = next((f for f in tools if f.get("name") == named), tools[0] if tools else {"name": "tool"})
    arguments = _arguments(function.get("parameters"), last_words)
    digest = hashlib.sha256(
        orjson.dumps([function.get("name"), arguments, len(body["messages"])])
    ).hexdigest()
    call_id = f"call_sim{digest[:16]}"
    return [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": function.get("name"), "arguments": arguments},
        }
    ]


def _arguments(schema: Any, words: list[str]) -> str:
    properties = schema.get("properties") if isinstance(schema, dict) else None
    values: dict[str, Any] = {}
    for name, spec in (properties or {}).items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        values[name] = {"number": 1, "integer": 1, "boolean": True}.get(
            str(kind), " ".join(words[:3]) or name
        )
    return orjson.dumps(values).decode()


def tokens_of(text: str) -> list[str]:
    return [text[i : i + TOKEN_CHARS] for i in range(0, len(text), TOKEN_CHARS)]


def openai_events(reply: dict[str, Any], include_usage: bool = False) -> list[bytes]:
    """The reply as `data:` payloads, one token each; the caller paces them and adds [DONE]."""
    base = {"object": "chat.completion.chunk", **{k: reply[k] for k in ("id", "created", "model")}}
    choice = reply["choices"][0]
    message = choice["message"]
    deltas: list[dict[str, Any]] = []
    calls = message.get("tool_calls") or []
    if calls:
        for index, call in enumerate(calls):
            head = {"index": index, "id": call["id"], "type": "function"}
            function = {"name": call["function"]["name"], "arguments": ""}
            deltas.append({"tool_calls": [{**head, "function": function}]})
            for piece in tokens_of(call["function"]["arguments"]):
                deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        deltas[0] = {"role": "assistant", "content": None, **deltas[0]}
    else:
        pieces = tokens_of(message.get("content") or "") or [""]
        deltas = [{"role": "assistant", "content": pieces[0]}, *({"content": p} for p in pieces[1:])]
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]})
    if include_usage:
        events.append({**base, "choices": [], "usage": reply["usage"]})
    return [orjson.dumps(event) for event in events]


def anthropic_events(message: dict[str, Any]) -> list[bytes]:
    """A messages-API message as its stream: `event: <type>\\ndata: <json>` blocks."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opened = {**block, "input": {}}
            pieces = tokens_of(orjson.dumps(block["input"]).decode())
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        else:
            opened = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in tokens_of(block["text"])]
        events.append({"type": "content_block_start", "index": index, "content_block": opened})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append(
        {"type": "message_delta", "delta": stop, "usage": {"output_tokens": usage["output_tokens"]}}
    )
    events.append({"type": "message_stop"})
    return [b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) for e in events]
