"""Anthropic's messages API (`POST {base_url}/v1/messages`) for catalog entries of kind
"anthropic": the request translation and the reply parser. The HTTP call itself is the shared
ChatClient's (openai_http), so both kinds share connection pools, deadlines and error handling.

Differences from OpenAI handled here: system turns go in a separate top-level `system` field;
`max_tokens` is required; there is no JSON mode, so a JSON response_format becomes an
instruction in the system prompt; usage is `input_tokens`/`output_tokens`; `stop_reason`
end_turn/stop_sequence maps to finish_reason "stop" and max_tokens to "length".
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import SecretStr

from schemas import ErrorCode
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
    turns: list[dict[str, str]] = []
    for message in chat["messages"]:
        if message["role"] == "system":
            system.append(message["content"])
        else:
            turns.append({"role": message["role"], "content": message["content"]})
    response_format = chat.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        system.append(JSON_INSTRUCTION)
    body: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": chat["max_tokens"],
        "temperature": min(float(chat.get("temperature", 1.0)), 1.0),  # Anthropic's range is 0..1
    }
    if system:
        body["system"] = "\n\n".join(system)
    return body


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
    )
