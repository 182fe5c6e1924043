"""The OpenAI-compatible HTTP front door (/v1/chat/completions, /v1/models, /v1/feedback).

Each completion becomes one Request on Kafka, sent through the gateway's one shared SluiceClient
and awaited by correlation_id. Bodies are checked here, so malformed input costs a 400/413 and
never reaches Kafka; what depends on tenant state is decided by the pipeline and mapped back.
Streaming is SSE in OpenAI's chunk format, relayed as the pipeline's StreamChunks arrive (text
released by the stream's checks); the last chunk carries finish_reason, tool calls and the
`sluice` extension. A stream its checks cut ends with the tenant's safe message and
finish_reason "content_filter"; an error before any text is a plain JSON error with its status,
one after it an OpenAI `error` event."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from schemas import ErrorCode, Feedback, Request, Response, Status, StreamChunk
from sluice.edge.client import SluiceClient, SluiceTimeout, SluiceUnsent
from sluice.edge.http import ReadinessProbe, build_http_app
from sluice.edge.identity import TenantResolver, Unauthorized, tenant_resolver
from sluice.providers.catalog import Catalog, load_catalog
from sluice.request_ids import owned_by
from sluice.settings import Settings

log = logging.getLogger("sluice.gateway")

MAX_CORRELATION_ID = 128
MAX_API_KEY = 1024
MAX_FEEDBACK_BYTES = 16 * 1024
BODY_SLACK = 2  # raw body limit = BODY_SLACK x the Request's: room for OpenAI-only fields, escapes
MAX_DEPTH = 32  # JSON nesting; orjson parses 1024 levels but serializes only 255
CHAT_ID_PREFIX = "chatcmpl-"

# The contract's error code -> (HTTP status, OpenAI error type).
ERROR_STATUS: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorCode.PAYLOAD_TOO_LARGE: (413, "invalid_request_error"),
    ErrorCode.UNAUTHORIZED: (401, "authentication_error"),
    ErrorCode.PROMPT_INJECTION: (403, "permission_error"),
    ErrorCode.POLICY_VIOLATION: (403, "permission_error"),
    ErrorCode.RATE_LIMITED: (429, "rate_limit_error"),
    ErrorCode.BUDGET_EXCEEDED: (429, "insufficient_quota"),
    ErrorCode.RESPONSE_INVALID: (502, "upstream_error"),
    ErrorCode.MODEL_UNAVAILABLE: (503, "service_unavailable_error"),
    ErrorCode.TIMEOUT: (504, "timeout_error"),
    ErrorCode.INTERNAL: (500, "server_error"),
}
# Retry-After seconds when the pipeline's error gives no hint of its own (retry_after_s).
RETRY_AFTER_S: dict[ErrorCode, int] = {ErrorCode.RATE_LIMITED: 1, ErrorCode.BUDGET_EXCEEDED: 60}

_MAPPED = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "temperature"})
_MAPPED |= {"response_format", "stream", "stream_options", "context", "metadata", "deadline_ms"}
_MAPPED |= {"tools", "tool_choice", "stop"}
_IGNORED = frozenset({"top_p", "user", "seed", "store"})  # they change nothing Sluice promises
# Accepted at their default only: any other value asks for something Sluice does not do.
_ONLY_DEFAULT: dict[str, object] = {"n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0}
_ONLY_DEFAULT["parallel_tool_calls"] = True
_SLUICE_FIELDS = {"request_id", "status", "cost_usd", "cached", "latency_ms", "checks"}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter"})


class GatewayError(Exception):
    """An error answer; its code decides HTTP status and type."""

    def __init__(
        self, code: ErrorCode, message: str, param: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param
        self.retry_after_s = retry_after_s


def error_reply(error: GatewayError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, OpenAI error body, headers): the body makes SDKs raise their typed errors."""
    status, kind = ERROR_STATUS[error.code]
    body = {"error": {"message": error.message, "type": kind, "code": error.code.value, "param": error.param}}
    retry_after = RETRY_AFTER_S.get(error.code)
    if retry_after is not None and error.retry_after_s is not None:  # whole seconds, rounded up
        retry_after = max(1, math.ceil(error.retry_after_s))
    return status, body, {} if retry_after is None else {"Retry-After": str(retry_after)}


def unsent_error(exc: SluiceUnsent) -> GatewayError:
    """Kafka refused the request, so the pipeline never saw it: a 503 the client may retry."""
    return GatewayError(ErrorCode.MODEL_UNAVAILABLE, f"{exc}; it was not processed, send it again")


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(ErrorCode.INVALID_REQUEST, message, param)


@dataclass(frozen=True)
class ChatCall:
    """A parsed chat completion: `request` is a Request-shaped dict, ready for Kafka."""

    request: dict[str, Any]
    stream: bool = False
    include_usage: bool = False
    deadline_ms: int = 30_000


def bearer_key(header: str | None) -> str | None:
    """The API key of `Authorization: Bearer <key>`, None without the header; raises 401."""
    if header is None:
        return None
    scheme, _, key = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not 0 < len(key := key.strip()) <= MAX_API_KEY or not _clean(key):
        raise GatewayError(ErrorCode.UNAUTHORIZED, "Authorization header must be 'Bearer <api_key>'")
    return key


def correlation_id_from(header: str | None) -> str:
    """`X-Request-Id` when the client chose one, else a new uuid; raises 400 when unusable."""
    if header is None:
        return uuid.uuid4().hex
    if not 0 < len(header) <= MAX_CORRELATION_ID or not _clean(header):
        raise _invalid("X-Request-Id: must be 1-128 printable ASCII characters", "X-Request-Id")
    return header


def _clean(text: str) -> bool:
    """Kafka keys and orjson need clean text; aiohttp passes undecodable header bytes as surrogates."""
    return text.isascii() and text.isprintable()


def parse_chat_request(
    raw: bytes, *, correlation_id: str, tenant: str, api_key: str | None, settings: Settings
) -> ChatCall | GatewayError:
    """OpenAI chat body -> Request-shaped dict, or the 400/413 error to answer. Never raises.
    The encoded Request must fit the validate stage's limits, checked here to spare Kafka."""
    body = _load_object(raw, BODY_SLACK * settings.max_request_bytes)
    if isinstance(body, GatewayError):
        return body
    if _too_deep(body, MAX_DEPTH):
        return _invalid(f"body is nested deeper than {MAX_DEPTH} levels")
    if (problem := _unsupported_field(body)) is not None:
        return problem
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _invalid("messages: must be a non-empty list", "messages")
    converted = [_message(index, message) for index, message in enumerate(messages)]
    if bad := [item for item in converted if isinstance(item, GatewayError)]:
        return bad[0]
    stream, options = body.get("stream"), body.get("stream_options")
    if stream is not None and not isinstance(stream, bool):
        return _invalid("stream: must be a boolean", "stream")
    if options is not None and not isinstance(options, dict):
        return _invalid("stream_options: must be an object", "stream_options")
    max_tokens, legacy = body.get("max_completion_tokens"), body.get("max_tokens")
    if max_tokens is not None and legacy is not None and max_tokens != legacy:
        return _invalid("max_tokens and max_completion_tokens disagree; send one", "max_tokens")
    request: dict[str, Any] = {"correlation_id": correlation_id, "tenant": tenant, "messages": converted}
    if stream:
        request["stream"] = True
    fields = {"api_key": api_key, "max_tokens": legacy if max_tokens is None else max_tokens}
    fields.update({name: body.get(name) for name in ("model", "temperature", "response_format")})
    fields.update({"tools": body.get("tools"), "tool_choice": body.get("tool_choice")})
    stop = body.get("stop")
    fields["stop"] = [stop] if isinstance(stop, str) else stop  # OpenAI takes one string or a list
    fields.update({name: body.get(name) for name in ("context", "metadata", "deadline_ms")})
    request.update({name: value for name, value in fields.items() if value is not None})
    try:
        Request.model_validate(request, strict=True)
    except ValidationError as exc:
        return _invalid(*_describe(exc))
    deadline_ms = request.get("deadline_ms", 30_000)
    if not settings.min_deadline_ms <= deadline_ms <= settings.max_deadline_ms:
        bounds = f"{settings.min_deadline_ms}-{settings.max_deadline_ms}"
        return _invalid(f"deadline_ms: must be {bounds}", "deadline_ms")
    if (size := len(orjson.dumps(request))) > settings.max_request_bytes:
        message = f"request is {size} bytes; the limit is {settings.max_request_bytes} bytes"
        return GatewayError(ErrorCode.PAYLOAD_TOO_LARGE, message, "messages")
    usage = bool(stream) and options is not None and options.get("include_usage") is True
    return ChatCall(request, bool(stream), usage, deadline_ms)


def _load_object(raw: bytes, limit: int) -> dict[str, Any] | GatewayError:
    if len(raw) > limit:
        return GatewayError(ErrorCode.PAYLOAD_TOO_LARGE, f"body is {len(raw)} bytes; the limit is {limit}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _invalid(f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return _invalid(f"body must be a JSON object, not {type(body).__name__}")
    return body


def _unsupported_field(body: dict[str, Any]) -> GatewayError | None:
    for key, value in body.items():
        if key in _MAPPED or value is None:  # null means "not used", as in OpenAI's API
            continue
        if key in _ONLY_DEFAULT:
            default = _ONLY_DEFAULT[key]
            if value != default or isinstance(value, bool) != isinstance(default, bool):
                return _invalid(f"{key}: only {default!r} is supported", key)
        elif key not in _IGNORED:  # tools, stop, logit_bias, ... and typos alike
            return _invalid(f"{key}: not supported by Sluice", key)
    return None


def _message(index: int, value: object) -> dict[str, Any] | GatewayError:
    where = f"messages[{index}]"
    if not isinstance(value, dict):
        return _invalid(f"{where}: must be an object", where)
    for key, item in value.items():
        if key not in ("role", "content", "name", "tool_calls", "tool_call_id") and item is not None:
            return _invalid(f"{where}.{key}: not supported by Sluice", f"{where}.{key}")
    role = _ROLES.get(value["role"]) if isinstance(value.get("role"), str) else None
    if role is None:
        return _invalid(f"{where}.role: must be one of {', '.join(_ROLES)}", f"{where}.role")
    content = value.get("content")
    if isinstance(content, list):  # content parts: text only
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) != len(content) or not all(isinstance(text, str) for text in texts):
            return _invalid(f"{where}.content: only text parts are supported", f"{where}.content")
        content = "\n".join(str(text) for text in texts)
    calls = value.get("tool_calls")
    if content is None and role == "assistant" and calls:  # a turn that only calls tools
        content = ""
    if not isinstance(content, str):
        return _invalid(f"{where}.content: must be a string or a list of text parts", f"{where}.content")
    message: dict[str, Any] = {"role": role, "content": content}
    if calls is not None:
        message["tool_calls"] = calls  # checked with the whole Request
    if value.get("tool_call_id") is not None:
        message["tool_call_id"] = value["tool_call_id"]
    return message


def _too_deep(value: object, limit: int) -> bool:
    """Iterative, so hostile nesting cannot exhaust the stack."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _describe(exc: ValidationError) -> tuple[str, str]:
    """Name the offending fields without echoing their values (they may hold secrets)."""
    errors = exc.errors()
    places = [".".join(str(part) for part in error["loc"]) or "body" for error in errors]
    text = "; ".join(f"{place}: {error['msg']}" for place, error in zip(places[:3], errors, strict=False))
    return text + (f"; and {len(errors) - 3} more" if len(errors) > 3 else ""), places[0]


def parse_feedback(raw: bytes, *, tenant: str) -> Feedback | GatewayError:
    """The Feedback message; its tenant defaults to (and must equal) the key's tenant, and a
    completion id (`chatcmpl-<request_id>`) is accepted as the request_id. Never raises."""
    body = _load_object(raw, MAX_FEEDBACK_BYTES)
    if isinstance(body, GatewayError):
        return body
    if body.setdefault("tenant", tenant) != tenant:
        return GatewayError(ErrorCode.UNAUTHORIZED, "tenant does not match the API key", "tenant")
    if type(body.get("rating")) is not int:  # pydantic's Literal[1] would take True
        return _invalid("rating: must be -1, 0 or 1", "rating")
    if isinstance(request_id := body.get("request_id"), str):
        body["request_id"] = request_id.removeprefix(CHAT_ID_PREFIX)
    try:
        return Feedback.model_validate(body, strict=True)
    except ValidationError as exc:
        return _invalid(*_describe(exc))


def response_error(response: Response) -> GatewayError | None:
    """The error to answer with, or None when the response is a completion."""
    if response.status is Status.OK:
        return None
    if (error := response.error) is not None:
        return GatewayError(error.code, error.message, retry_after_s=error.retry_after_s)
    return GatewayError(ErrorCode.INTERNAL, f"request ended with status {response.status.value}")


def finish_reason(response: Response) -> str:
    if "truncated" in response.checks.flags:
        return "length"
    reason = response.finish_reason
    return reason if reason in _FINISH_REASONS else "stop"


def tool_calls_of(response: Response) -> list[dict[str, Any]] | None:
    if not response.tool_calls:
        return None
    return [call.model_dump(mode="json") for call in response.tool_calls]


def sluice_object(response: Response) -> dict[str, Any]:
    return response.model_dump(mode="json", include=_SLUICE_FIELDS)


def _head(response: Response, kind: str, requested_model: str, created: int) -> dict[str, Any]:
    head = {"id": f"{CHAT_ID_PREFIX}{response.request_id}", "object": kind, "created": created}
    return {**head, "model": response.model or requested_model}


def completion_body(response: Response, *, requested_model: str, created: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": response.content}
    if (calls := tool_calls_of(response)) is not None:
        message.update(tool_calls=calls, content=response.content or None)
    choice = {"index": 0, "message": message, "finish_reason": finish_reason(response), "logprobs": None}
    return {
        **_head(response, "chat.completion", requested_model, created),
        "choices": [choice],
        "usage": response.usage.model_dump(mode="json"),
        "sluice": sluice_object(response),
    }


def stream_chunks(
    response: Response, *, requested_model: str, created: int, usage: bool
) -> list[dict[str, Any]]:
    """The whole answer as OpenAI chunks: role, all the content at once, finish (plus `sluice`)."""
    head = _head(response, "chat.completion.chunk", requested_model, created)
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": ""},
        {"content": response.content or ""},
        {},
    ]
    if (calls := tool_calls_of(response)) is not None:
        deltas[1] = {"tool_calls": [{"index": n, **call} for n, call in enumerate(calls)]}
    reasons = [None, None, finish_reason(response)]
    steps = zip(deltas, reasons, strict=True)
    choices = [{"index": 0, "delta": d, "finish_reason": r, "logprobs": None} for d, r in steps]
    chunks = [{**head, "choices": [choice]} for choice in choices]
    chunks[-1]["sluice"] = sluice_object(response)
    if usage:  # OpenAI's stream_options.include_usage: one last chunk, no choices
        chunks.append({**head, "choices": [], "usage": response.usage.model_dump(mode="json")})
    return chunks


def sse_body(chunks: list[dict[str, Any]]) -> bytes:
    """Server-sent events as OpenAI sends them, ending with `data: [DONE]`."""
    return b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks) + b"data: [DONE]\n\n"


def sse_event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def _done(sse: web.StreamResponse) -> web.StreamResponse:
    await sse.write(b"data: [DONE]\n\n")
    await sse.write_eof()
    return sse


def models_body(catalog: Catalog, *, created: int, allowed: tuple[str, ...] = ()) -> dict[str, Any]:
    """`auto` and the catalog's models; only those in `allowed` (the tenant's list) when set."""
    names = [entry.name for entry in catalog.models if not allowed or entry.name in allowed]
    names = ["auto", *names] if not allowed or "auto" in allowed else names
    data = [{"id": name, "object": "model", "created": created, "owned_by": "sluice"} for name in names]
    return {"object": "list", "data": data}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200, extra: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=extra, content_type="application/json"
    )


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> web.Response:
    status, body, extra = error_reply(error)
    return json_response(body, status, {**extra, **(headers or {})})


def _guarded(handler: Handler) -> Handler:
    """Every failure becomes an OpenAI error body: typed ones with their status, the rest 500."""

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as error:
            return error_response(error)
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            return error_response(GatewayError(ErrorCode.INTERNAL, "internal error"))

    return run


async def read_body(request: web.Request, limit: int) -> bytes:
    """At most `limit` bytes; a larger body is refused (413) without being buffered."""
    try:
        await request.content.readexactly(limit + 1)
    except asyncio.IncompleteReadError as short:  # the normal case: the body ended first
        return short.partial
    raise GatewayError(ErrorCode.PAYLOAD_TOO_LARGE, f"body is larger than {limit} bytes")


class Gateway:
    """The front door's routes and the one SluiceClient they share (`start` connects it).
    `resolve_tenant(api_key)` maps a key (None without a header) to its tenant or raises
    Unauthorized; by default it follows the settings' tenants file (sluice.edge.identity)."""

    def __init__(
        self,
        settings: Settings,
        *,
        default_tenant: str = "demo",
        resolve_tenant: TenantResolver | None = None,
        grace_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.default_tenant = default_tenant
        self.resolve_tenant: TenantResolver = resolve_tenant or tenant_resolver(
            settings.tenant_policy, default_tenant
        )
        self.grace_s = grace_s  # waited beyond the request's deadline for the pipeline's own answer
        self.catalog = load_catalog(settings)
        self.created = int(time.time())
        self._client: SluiceClient | None = None
        self._in_flight: set[tuple[str, str]] = set()

    async def start(self) -> None:
        client = SluiceClient(settings=self.settings)
        await client.start()
        self._client = client

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.stop()

    async def readiness(self) -> dict[str, bool]:
        """Connected, and the reply reader alive: while it is down every request would time out."""
        client = self._client
        return {"gateway": client is not None, **(client.readiness() if client is not None else {})}

    def _tenant_of(self, request: web.Request) -> tuple[str, str | None]:
        """(tenant, api_key) of an HTTP request; 401 when the key does not identify a tenant."""
        api_key = bearer_key(request.headers.get("Authorization"))
        try:
            return self.resolve_tenant(api_key), api_key
        except Unauthorized as exc:
            raise GatewayError(ErrorCode.UNAUTHORIZED, exc.message) from None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", _guarded(self._chat))
        app.router.add_get("/v1/models", _guarded(self._models))
        app.router.add_post("/v1/feedback", _guarded(self._feedback))

    def _connected(self) -> SluiceClient:
        if self._client is None:
            raise GatewayError(ErrorCode.MODEL_UNAVAILABLE, "the gateway is not connected to Kafka")
        return self._client

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        tenant, api_key = self._tenant_of(request)
        correlation_id = correlation_id_from(request.headers.get("X-Request-Id"))
        echo = {"X-Request-Id": correlation_id}
        raw = await read_body(request, BODY_SLACK * self.settings.max_request_bytes)
        call = parse_chat_request(
            raw, correlation_id=correlation_id, tenant=tenant, api_key=api_key, settings=self.settings
        )
        if isinstance(call, GatewayError):
            return error_response(call, echo)
        if (tenant, correlation_id) in self._in_flight:  # one reply future per id: a twin would steal it
            return error_response(_invalid("X-Request-Id: a request with this id is in flight"), echo)
        self._in_flight.add((tenant, correlation_id))
        if call.stream:
            try:
                return await self._stream(request, call, echo)
            finally:
                self._in_flight.discard((tenant, correlation_id))
        try:
            timeout_s = call.deadline_ms / 1000 + self.grace_s
            response = await self._connected().request(**call.request, timeout_s=timeout_s)
        except SluiceTimeout as exc:
            return error_response(GatewayError(ErrorCode.TIMEOUT, str(exc)), echo)
        except SluiceUnsent as exc:
            return error_response(unsent_error(exc), echo)
        finally:
            self._in_flight.discard((tenant, correlation_id))
        if (error := response_error(response)) is not None:
            return error_response(error, echo)
        model, created = call.request.get("model", "auto"), int(time.time())
        return json_response(completion_body(response, requested_model=model, created=created), 200, echo)

    async def _stream(self, request: web.Request, call: ChatCall, echo: dict[str, str]) -> web.StreamResponse:
        """Relay the pipeline's chunks as OpenAI SSE, headers sent with the first of them."""
        fields = {k: v for k, v in call.request.items() if k != "stream"}
        created, requested = int(time.time()), call.request.get("model", "auto")
        sse: web.StreamResponse | None = None

        async def send(chunk: dict[str, Any]) -> web.StreamResponse:
            nonlocal sse
            if sse is None:
                sse = web.StreamResponse(
                    headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **echo}
                )
                await sse.prepare(request)
                role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                await sse.write(sse_event({**chunk, "choices": [role]}))
            await sse.write(sse_event(chunk))
            return sse

        try:
            async for item in self._connected().stream(
                **fields, timeout_s=call.deadline_ms / 1000 + self.grace_s
            ):
                if isinstance(item, StreamChunk):
                    head: dict[str, Any] = {"id": f"{CHAT_ID_PREFIX}{item.request_id}"}
                    head |= {"object": "chat.completion.chunk"}
                    head |= {"created": created, "model": item.model or requested}
                    delta = {"index": 0, "delta": {"content": item.delta}, "finish_reason": None}
                    await send({**head, "choices": [delta]})
                    continue
                return await self._stream_end(item, call, send, sse, echo, requested, created)
        except SluiceTimeout as exc:
            if sse is None:
                return error_response(GatewayError(ErrorCode.TIMEOUT, str(exc)), echo)
            await sse.write(sse_event(error_reply(GatewayError(ErrorCode.TIMEOUT, str(exc)))[1]))
            return await _done(sse)
        except SluiceUnsent as exc:  # before any chunk: nothing was processed
            return error_response(unsent_error(exc), echo)
        raise GatewayError(ErrorCode.INTERNAL, "the stream ended without a response")

    async def _stream_end(
        self,
        response: Response,
        call: ChatCall,
        send: Callable[[dict[str, Any]], Awaitable[web.StreamResponse]],
        sse: web.StreamResponse | None,
        echo: dict[str, str],
        requested: str,
        created: int,
    ) -> web.StreamResponse:
        """The Response ends the stream: tool calls, finish and `sluice`, usage; or the error."""
        cut = response.finish_reason == "content_filter"
        error = None if cut else response_error(response)
        if error is not None and sse is None:
            return error_response(error, echo)
        if error is not None and sse is not None:
            await sse.write(sse_event(error_reply(error)[1]))  # OpenAI's SDKs raise on an error event
            return await _done(sse)
        tail = stream_chunks(response, requested_model=requested, created=created, usage=call.include_usage)
        if cut:  # the tenant's safe message takes the place of the rest of the answer
            tail[1]["choices"][0]["delta"] = {"content": response.content or ""}
        elif not response.tool_calls:
            tail.pop(1)  # the text came in its chunks
        for chunk in tail[1:]:
            sse = await send(chunk)
        assert sse is not None
        return await _done(sse)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        """What the caller's tenant may use (access.allowed_models; none listed: every model)."""
        tenant, _ = self._tenant_of(request)
        allowed = tuple(self.settings.tenant(tenant).access.allowed_models)
        return json_response(models_body(self.catalog, created=self.created, allowed=allowed))

    async def _feedback(self, request: web.Request) -> web.StreamResponse:
        tenant, _ = self._tenant_of(request)
        feedback = parse_feedback(await read_body(request, MAX_FEEDBACK_BYTES), tenant=tenant)
        if isinstance(feedback, GatewayError):
            return error_response(feedback)
        # The id names its tenant (sluice/request_ids.py): any gateway decides, after any restart.
        if not owned_by(feedback.request_id, tenant, self.settings.request_id_tag_key):
            return json_response(_not_found(feedback.request_id), 404)
        await self._connected().feedback(feedback)
        return json_response({"accepted": True}, 202)


def _not_found(request_id: str) -> dict[str, Any]:
    message = f"no request {request_id!r} of this tenant"
    error = {"message": message, "type": "invalid_request_error", "code": "not_found"}
    return {"error": {**error, "param": "request_id"}}


@asynccontextmanager
async def serve_gateway(
    settings: Settings, host: str, port: int, readiness: ReadinessProbe | None = None, **options: Any
) -> AsyncIterator[Gateway]:
    """Serve the gateway (and /healthz) on host:port for the duration of the block; `options`
    go to `Gateway` (default_tenant, resolve_tenant, grace_s)."""
    gateway = Gateway(settings, **options)
    await gateway.start()
    runner = web.AppRunner(build_http_app(readiness or gateway.readiness, gateway=gateway))
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        yield gateway
    finally:
        await runner.cleanup()
        await gateway.stop()
