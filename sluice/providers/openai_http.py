"""Calls model servers: OpenAI-compatible `/v1/chat/completions` (OpenAI, vLLM, Ollama, llama.cpp,
TGI) and, for catalog entries of kind "anthropic", Anthropic's `/v1/messages` (anthropic_http).

One `httpx.AsyncClient` per worker, over a pooled aiohttp transport, keeps connections pooled
across thousands of calls in flight; every call is bounded by the request's own deadline as well
as the client timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from schemas import ErrorCode, ToolCall
from sluice.providers import anthropic_http
from sluice.providers.calls import Completion, ProviderError, status_error
from sluice.providers.catalog import ModelEntry, api_key, base_url
from sluice.providers.pooled_transport import PooledTransport
from sluice.providers.streaming import StreamPart, StreamReader, prompt_estimate

__all__ = ["ChatClient", "Completion", "ProviderError", "parse_completion"]
from sluice.settings import Settings


class ChatClient:
    """The worker's shared HTTP client for every model in the catalog: httpx over one pooled
    aiohttp transport (sluice/providers/pooled_transport.py), up to `infer_max_in_flight`
    connections. httpx's own pool scanned all its connections on every request (2,000
    concurrent calls through one client took 97 s against a 1 s server) and took more CPU per
    call; `transport` replaces the pool (tests pass a fake server)."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        # The transport holds the pool and its limit (httpx ignores `limits` beside a transport).
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.infer_connect_timeout_s,
                read=settings.infer_read_timeout_s,
                write=settings.infer_connect_timeout_s,
                pool=settings.infer_read_timeout_s,
            ),
            transport=transport
            or PooledTransport(
                max_connections=settings.infer_max_in_flight, tls=ssl.create_default_context()
            ),
        )
        self._keys: dict[tuple[str, str | None], SecretStr | None] = {}

    async def close(self) -> None:
        await self._client.aclose()

    def _api_key(self, entry: ModelEntry) -> SecretStr | None:
        """The model's key, read from the environment once per client, not once per call."""
        # by variable too: a replica may name its own key (Deployment.api_key_env)
        cache = (entry.name, entry.api_key_env)
        if cache not in self._keys:
            self._keys[cache] = api_key(entry)
        return self._keys[cache]

    @contextlib.contextmanager
    def _calling(self, entry: ModelEntry, timeout_s: float) -> Iterator[httpx.AsyncClient]:
        """The client for one call; httpx's failures become ProviderErrors (connect errors and
        drops are the endpoint's fault, not the request's)."""
        try:
            yield self._client
        except httpx.ConnectTimeout as exc:
            raise ProviderError(
                ErrorCode.MODEL_UNAVAILABLE, f"{entry.name}: connect timeout", retryable=True
            ) from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise ProviderError(ErrorCode.TIMEOUT, f"{entry.name}: no reply within {timeout_s:.2f}s") from exc
        except httpx.HTTPError as exc:  # refused, reset, dropped: the endpoint, not the request
            raise ProviderError(
                ErrorCode.MODEL_UNAVAILABLE, f"{entry.name}: {type(exc).__name__}: {exc}", retryable=True
            ) from exc

    def _prepare(self, entry: ModelEntry, payload: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
        """(url, headers, body) of a call to this entry, in its kind's dialect."""
        key = self._api_key(entry)
        root = base_url(entry, self._settings)
        if entry.kind == "anthropic":
            headers = anthropic_http.headers(key)
            body = orjson.dumps(anthropic_http.messages_payload(payload, entry.served_name))
            return anthropic_http.messages_url(root), headers, body
        headers = {"content-type": "application/json"}
        if key is not None:
            headers["authorization"] = f"Bearer {key.get_secret_value()}"
        return f"{root}/chat/completions", headers, orjson.dumps({**payload, "model": entry.served_name})

    async def stream(
        self, entry: ModelEntry, payload: dict[str, Any], budget_s: float
    ) -> AsyncGenerator[StreamPart, None]:
        """One streamed call: text deltas as the model writes them, then the whole Completion.
        Bounded by `budget_s` in all; leaving the loop early closes the connection (the model
        stops generating)."""
        if budget_s <= 0:
            raise ProviderError(ErrorCode.TIMEOUT, "deadline passed before the model was called")
        timeout_s = min(budget_s, entry.timeout_s or self._settings.infer_read_timeout_s)
        body = {**payload, "stream": True}
        if entry.kind != "anthropic":
            body["stream_options"] = {"include_usage": True}
        url, headers, content = self._prepare(entry, body)
        reader = StreamReader(entry.name, entry.kind)
        started = time.perf_counter()
        deadline = started + timeout_s
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, self._settings.infer_connect_timeout_s))
        with self._calling(entry, timeout_s) as shard:
            async with shard.stream("POST", url, content=content, headers=headers, timeout=timeout) as reply:
                if reply.status_code != 200:
                    await reply.aread()
                    raise status_error(entry.name, reply.status_code, _error_text(reply), reply.headers)
                async for line in reply.aiter_lines():
                    if time.perf_counter() > deadline:
                        raise TimeoutError
                    if text := reader.feed(line):
                        yield StreamPart(text=text)
        latency_ms = (time.perf_counter() - started) * 1000
        yield StreamPart(done=reader.completion(latency_ms, prompt_estimate(payload)))

    async def complete(self, entry: ModelEntry, payload: dict[str, Any], budget_s: float) -> Completion:
        """One call, bounded by `budget_s` (what is left of the request's deadline)."""
        if budget_s <= 0:
            raise ProviderError(ErrorCode.TIMEOUT, "deadline passed before the model was called")
        timeout_s = min(budget_s, entry.timeout_s or self._settings.infer_read_timeout_s)
        url, headers, body = self._prepare(entry, payload)
        started = time.perf_counter()
        with self._calling(entry, timeout_s) as shard:
            # httpx bounds each read and write; the overall timeout bounds the whole call
            async with asyncio.timeout(timeout_s):
                reply = await shard.post(
                    url,
                    content=body,
                    headers=headers,
                    timeout=httpx.Timeout(
                        timeout_s, connect=min(timeout_s, self._settings.infer_connect_timeout_s)
                    ),
                )
        latency_ms = (time.perf_counter() - started) * 1000
        if reply.status_code != 200:
            raise status_error(entry.name, reply.status_code, _error_text(reply), reply.headers)
        if entry.kind == "anthropic":
            return anthropic_http.parse_message(entry.name, reply.content, latency_ms)
        return parse_completion(entry.name, reply.content, latency_ms)


def parse_completion(model: str, raw: bytes, latency_ms: float) -> Completion:
    """Read an OpenAI chat-completion body; anything off-protocol is the provider's failure."""
    try:
        data = orjson.loads(raw)
        choice = data["choices"][0]
        content = choice["message"]["content"]
        calls = choice["message"].get("tool_calls") or []
        tool_calls = tuple(ToolCall.model_validate(call) for call in calls)
        usage = data.get("usage") or {}
        if not isinstance(usage, dict):
            raise TypeError(f"usage is a {type(usage).__name__}, not an object")
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        completion_tokens = int(usage.get("completion_tokens", 0))
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        # pydantic's ValidationError is a ValueError: a broken tool call lands here too
        raise ProviderError(
            ErrorCode.MODEL_UNAVAILABLE, f"{model}: malformed reply ({exc!r})", retryable=True
        ) from exc
    if not isinstance(content, str):
        content = "" if content is None else str(content)
    finish = choice.get("finish_reason")
    return Completion(
        content=content,
        finish_reason=finish if isinstance(finish, str) else None,
        prompt_tokens=max(prompt_tokens, 0),
        completion_tokens=max(completion_tokens, 0),
        latency_ms=latency_ms,
        tool_calls=tool_calls,
    )


def _error_text(reply: httpx.Response) -> str:
    """The error message of an OpenAI or Anthropic error body (both nest it in "error")."""
    try:
        message = orjson.loads(reply.content)["error"]["message"]
        return str(message)[:200]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return reply.text[:200]
