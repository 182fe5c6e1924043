"""The OpenAI-compatible HTTP front door: `POST /v1/chat/completions`, `GET /v1/models`,
`POST /v1/feedback`, served next to `/healthz` on SLUICE_HTTP_PORT.

Each chat completion becomes one Request on Kafka, published through the gateway's one shared
`SluiceClient` and answered by correlation_id, so any OpenAI SDK can talk to the pipeline.
Bodies are parsed and checked here (size, nesting, types, unsupported fields) so malformed
input costs a 400/413 and never reaches Kafka; everything that depends on tenant state
(keys, limits, budgets) is still decided by the pipeline and mapped back to HTTP statuses.

Streaming (`stream: true`) is real SSE in OpenAI's chunk format, but coarse for now: the
pipeline only releases an answer after validate_response has checked all of it, so the whole
content arrives as one chunk once the answer is ready (role chunk, content chunk, finish chunk,
`data: [DONE]`). Errors on a stream request are therefore plain JSON errors with their status.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from schemas import ErrorCode, Feedback, Request, Response, Status
from sluice.edge.client import SluiceClient, SluiceTimeout
from sluice.edge.http import ReadinessProbe, build_http_app
from sluice.providers.catalog import Catalog, load_catalog
from sluice.settings import Settings

log = logging.getLogger("sluice.gateway")

MAX_CORRELATION_ID = 128
MAX_API_KEY = 1024
MAX_FEEDBACK_BYTES = 16 * 1024
CHAT_ID_PREFIX = "chatcmpl-"

# Contract: error code -> (HTTP status, OpenAI error type).
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
# Seconds a client should wait before retrying; the pipeline gives no finer hint yet.
RETRY_AFTER_S: dict[ErrorCode, int] = {ErrorCode.RATE_LIMITED: 1, ErrorCode.BUDGET_EXCEEDED: 60}

_MAPPED = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "response_format"}
    | {"stream", "stream_options", "context", "metadata", "deadline_ms"}
)
# OpenAI fields that change nothing Sluice promises: accepted (type-checked) and ignored.
_IGNORED: dict[str, tuple[type, ...]] = {
    "top_p": (int, float),
    "user": (str,),
    "seed": (int,),
    "store": (bool,),
}
# Accepted only at their default value, since any other value asks for something Sluice does not do.
_ONLY_DEFAULT: dict[str, object] = {"n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class GatewayError(Exception):
    """An answer that is an error: the Sluice error code decides the HTTP status and type.
    `resolve_tenant` callables raise it (code unauthorized) to refuse a key."""

    def __init__(self, code: ErrorCode, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def error_status(code: ErrorCode) -> int:
    return ERROR_STATUS[code][0]


def error_body(error: GatewayError) -> dict[str, Any]:
    """OpenAI's error shape, so SDKs raise their typed exceptions with our message."""
    kind = ERROR_STATUS[error.code][1]
    return {"error": {"message": error.message, "type": kind, "code": error.code.value, "param": error.param}}


def error_headers(code: ErrorCode) -> dict[str, str]:
    retry_after = RETRY_AFTER_S.get(code)
    return {} if retry_after is None else {"Retry-After": str(retry_after)}


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(ErrorCode.INVALID_REQUEST, message, param)


@dataclass(frozen=True)
class BodyLimits:
    """`max_body_bytes` bounds the raw HTTP body before parsing (with slack for OpenAI-only
    fields and escapes); `max_request_bytes` is the validate stage's limit on the Request."""

    max_body_bytes: int
    max_request_bytes: int
    min_deadline_ms: int
    max_deadline_ms: int
    max_depth: int = 32

    @classmethod
    def from_settings(cls, settings: Settings, max_body_bytes: int | None = None) -> BodyLimits:
        return cls(
            max_body_bytes=max_body_bytes or 2 * settings.max_request_bytes,
            max_request_bytes=settings.max_request_bytes,
            min_deadline_ms=settings.min_deadline_ms,
            max_deadline_ms=settings.max_deadline_ms,
        )


@dataclass(frozen=True)
class ChatCall:
    """A parsed chat completion: `request` is a Request-shaped dict ready for Kafka."""

    request: dict[str, Any]
    stream: bool = False
    include_usage: bool = False
    model: str = "auto"
    deadline_ms: int = 30_000


# --- request side (pure) --------------------------------------------------------------------


def bearer_key(header: str | None) -> str | None:
    """The API key from `Authorization: Bearer <key>`; None without the header."""
    if header is None:
        return None
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > MAX_API_KEY or not _printable_ascii(key):
        raise GatewayError(ErrorCode.UNAUTHORIZED, "Authorization header must be 'Bearer <api_key>'")
    return key


def correlation_id_from(header: str | None) -> str:
    """`X-Request-Id` when the client chose one (1-128 printable ASCII chars), else a new uuid."""
    if header is None:
        return uuid.uuid4().hex
    if not 1 <= len(header) <= MAX_CORRELATION_ID or not _printable_ascii(header):
        raise _invalid("X-Request-Id: must be 1-128 printable ASCII characters", "X-Request-Id")
    return header


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def parse_chat_request(
    raw: bytes, *, correlation_id: str, tenant: str, api_key: str | None, limits: BodyLimits
) -> ChatCall | GatewayError:
    """OpenAI chat body -> Request-shaped dict, or the 400/413 error to answer. Never raises."""
    body = _load_object(raw, limits.max_body_bytes)
    if isinstance(body, GatewayError):
        return body
    if _too_deep(body, limits.max_depth):
        return _invalid(f"body is nested deeper than {limits.max_depth} levels")
    if (problem := _unsupported_field(body)) is not None:
        return problem
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _invalid("messages: must be a non-empty list", "messages")
    converted: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        mapped = _message(index, message)
        if isinstance(mapped, GatewayError):
            return mapped
        converted.append(mapped)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return _invalid("stream: must be a boolean", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return _invalid("stream_options: must be an object", "stream_options")
    max_tokens = body.get("max_completion_tokens")
    legacy = body.get("max_tokens")
    if max_tokens is not None and legacy is not None and max_tokens != legacy:
        return _invalid("max_tokens and max_completion_tokens disagree; send one", "max_tokens")
    request: dict[str, Any] = {"correlation_id": correlation_id, "tenant": tenant, "messages": converted}
    if api_key is not None:
        request["api_key"] = api_key
    fields = {"max_tokens": max_tokens if max_tokens is not None else legacy}
    for name in ("model", "temperature", "response_format", "context", "metadata", "deadline_ms"):
        fields[name] = body.get(name)
    request.update({name: value for name, value in fields.items() if value is not None})
    try:
        Request.model_validate(request, strict=True)
    except ValidationError as exc:
        return _invalid(*_describe(exc))
    if (
        not limits.min_deadline_ms
        <= request.get("deadline_ms", limits.min_deadline_ms)
        <= limits.max_deadline_ms
    ):
        return _invalid(
            f"deadline_ms: must be {limits.min_deadline_ms}-{limits.max_deadline_ms}", "deadline_ms"
        )
    if (size := len(orjson.dumps(request))) > limits.max_request_bytes:
        message = f"request is {size} bytes; the limit is {limits.max_request_bytes} bytes"
        return GatewayError(ErrorCode.PAYLOAD_TOO_LARGE, message, "messages")
    include_usage = bool(stream) and options is not None and options.get("include_usage") is True
    deadline_ms = request.get("deadline_ms", 30_000)
    return ChatCall(request, bool(stream), include_usage, request.get("model", "auto"), deadline_ms)


def _load_object(raw: bytes, limit: int) -> dict[str, Any] | GatewayError:
    if len(raw) > limit:
        return GatewayError(ErrorCode.PAYLOAD_TOO_LARGE, f"body is {len(raw)} bytes; the limit is {limit}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _invalid(f"body is not valid JSON: {exc}")
    return (
        body if isinstance(body, dict) else _invalid(f"body must be a JSON object, not {type(body).__name__}")
    )


def _unsupported_field(body: dict[str, Any]) -> GatewayError | None:
    for key, value in body.items():
        if key in _MAPPED or value is None:  # null means "not used", as in OpenAI's API
            continue
        if key in _IGNORED:
            if not _is_type(value, _IGNORED[key]):
                return _invalid(f"{key}: wrong type", key)
        elif key in _ONLY_DEFAULT:
            if not _same(value, _ONLY_DEFAULT[key]):
                return _invalid(f"{key}: only {_ONLY_DEFAULT[key]!r} is supported", key)
        else:  # tools, stop, logit_bias, ... and typos alike
            return _invalid(f"{key}: not supported by Sluice", key)
    return None


def _is_type(value: object, kinds: tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def _same(value: object, default: object) -> bool:
    if isinstance(default, bool):
        return value is default
    return _is_type(value, (int, float)) and value == default


def _message(index: int, value: object) -> dict[str, str] | GatewayError:
    where = f"messages[{index}]"
    if not isinstance(value, dict):
        return _invalid(f"{where}: must be an object", where)
    for key, item in value.items():
        if key not in ("role", "content", "name") and item is not None:
            return _invalid(f"{where}.{key}: not supported by Sluice", f"{where}.{key}")
    role = _ROLES.get(value["role"]) if isinstance(value.get("role"), str) else None
    if role is None:
        return _invalid(f"{where}.role: must be one of {', '.join(_ROLES)}", f"{where}.role")
    content = value.get("content")
    if isinstance(content, list):
        texts = [
            part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"
        ]
        if len(texts) != len(content) or not all(isinstance(text, str) for text in texts):
            return _invalid(f"{where}.content: only text parts are supported", f"{where}.content")
        content = "\n".join(str(text) for text in texts)
    if not isinstance(content, str):
        return _invalid(f"{where}.content: must be a string or a list of text parts", f"{where}.content")
    return {"role": role, "content": content}


def _too_deep(value: object, limit: int) -> bool:
    """Iterative, so a hostile body cannot exhaust the stack; orjson caps parsing at 1024 levels
    but serializes only 255, so anything deeper than `limit` is refused up front."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _describe(exc: ValidationError) -> tuple[str, str | None]:
    """Name the offending fields without echoing their values (they may hold secrets)."""
    errors = exc.errors()
    locations = [".".join(str(part) for part in error["loc"]) or "body" for error in errors]
    text = "; ".join(f"{where}: {error['msg']}" for where, error in zip(locations, errors[:3], strict=False))
    return text + (f"; and {len(errors) - 3} more" if len(errors) > 3 else ""), locations[0]


def parse_feedback(raw: bytes, *, tenant: str) -> Feedback | GatewayError:
    """The Feedback message; its tenant defaults to (and must equal) the key's tenant, and the
    `chatcmpl-` prefix of a completion id is accepted as the request_id. Never raises."""
    body = _load_object(raw, MAX_FEEDBACK_BYTES)
    if isinstance(body, GatewayError):
        return body
    if body.setdefault("tenant", tenant) != tenant:
        return GatewayError(ErrorCode.UNAUTHORIZED, "tenant does not match the API key", "tenant")
    if type(body.get("rating")) is not int:
        return _invalid("rating: must be -1, 0 or 1", "rating")
    request_id = body.get("request_id")
    if isinstance(request_id, str) and request_id.startswith(CHAT_ID_PREFIX):
        body["request_id"] = request_id.removeprefix(CHAT_ID_PREFIX)
    try:
        return Feedback.model_validate(body, strict=True)
    except ValidationError as exc:
        return _invalid(*_describe(exc))


# --- response side (pure) -------------------------------------------------------------------


def response_error(response: Response) -> GatewayError | None:
    """The error to answer with, or None when the response is a completion."""
    if response.status is Status.OK:
        return None
    if response.error is None:
        return GatewayError(ErrorCode.INTERNAL, f"request ended with status {response.status.value}")
    return GatewayError(response.error.code, response.error.message)


def finish_reason(response: Response) -> str:
    return "length" if "truncated" in response.checks.flags else "stop"


def sluice_object(response: Response) -> dict[str, Any]:
    return {
        "request_id": response.request_id,
        "status": response.status.value,
        "cost_usd": response.cost_usd,
        "cached": response.cached,
        "latency_ms": response.latency_ms,
        "checks": response.checks.model_dump(mode="json"),
    }


def _head(response: Response, kind: str, requested_model: str, created: int) -> dict[str, Any]:
    model = response.model or requested_model
    return {
        "id": f"{CHAT_ID_PREFIX}{response.request_id}",
        "object": kind,
        "created": created,
        "model": model,
    }


def completion_body(response: Response, *, requested_model: str, created: int) -> dict[str, Any]:
    message = {"role": "assistant", "content": response.content}
    choice = {"index": 0, "message": message, "finish_reason": finish_reason(response), "logprobs": None}
    return {
        **_head(response, "chat.completion", requested_model, created),
        "choices": [choice],
        "usage": response.usage.model_dump(mode="json"),
        "sluice": sluice_object(response),
    }


def stream_chunks(
    response: Response, *, requested_model: str, created: int, include_usage: bool = False
) -> list[dict[str, Any]]:
    """The whole answer as OpenAI chunks: role, all content at once, finish (with `sluice`)."""
    base = _head(response, "chat.completion.chunk", requested_model, created)

    def chunk(delta: dict[str, str], reason: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}

    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": response.content or ""}),
        {**chunk({}, finish_reason(response)), "sluice": sluice_object(response)},
    ]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": response.usage.model_dump(mode="json")})
    return chunks


def models_body(catalog: Catalog, *, created: int) -> dict[str, Any]:
    names = ["auto", *(entry.name for entry in catalog.models)]
    data = [{"id": name, "object": "model", "created": created, "owned_by": "sluice"} for name in names]
    return {"object": "list", "data": data}


# --- the server -----------------------------------------------------------------------------

TenantResolver = Callable[[str | None], str]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> web.Response:
    extra = {**error_headers(error.code), **(headers or {})}
    return json_response(error_body(error), error_status(error.code), extra)


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
    """Read at most `limit` bytes; refuse (413) larger bodies without buffering them."""
    too_large = GatewayError(ErrorCode.PAYLOAD_TOO_LARGE, f"body is larger than {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class Gateway:
    """The front door's routes plus the one SluiceClient they share (started by `start`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        default_tenant: str = "demo",
        resolve_tenant: TenantResolver | None = None,
        grace_s: float = 5.0,
        max_body_bytes: int | None = None,
    ) -> None:
        self.settings = settings
        self.default_tenant = default_tenant
        self.resolve_tenant: TenantResolver = resolve_tenant or (lambda _key: self.default_tenant)
        self.grace_s = grace_s
        self.limits = BodyLimits.from_settings(settings, max_body_bytes)
        self.catalog = load_catalog(settings)
        self.created = int(time.time())
        self._client: SluiceClient | None = None
        self._in_flight: set[str] = set()

    async def start(self) -> None:
        client = SluiceClient(settings=self.settings)
        await client.start()
        self._client = client

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.stop()

    async def readiness(self) -> dict[str, bool]:
        return {"gateway": self._client is not None}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", _guarded(self._chat))
        app.router.add_get("/v1/models", _guarded(self._models))
        app.router.add_post("/v1/feedback", _guarded(self._feedback))

    @property
    def client(self) -> SluiceClient:
        if self._client is None:
            raise GatewayError(ErrorCode.MODEL_UNAVAILABLE, "the gateway is not connected to Kafka")
        return self._client

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        tenant = self.resolve_tenant(api_key := bearer_key(request.headers.get("Authorization")))
        correlation_id = correlation_id_from(request.headers.get("X-Request-Id"))
        echo = {"X-Request-Id": correlation_id}
        raw = await read_body(request, self.limits.max_body_bytes)
        call = parse_chat_request(
            raw, correlation_id=correlation_id, tenant=tenant, api_key=api_key, limits=self.limits
        )
        if isinstance(call, GatewayError):
            return error_response(call, echo)
        if correlation_id in self._in_flight:
            return error_response(_invalid("X-Request-Id: a request with this id is in flight"), echo)
        options = {k: v for k, v in call.request.items() if k not in ("correlation_id", "tenant", "messages")}
        self._in_flight.add(correlation_id)
        try:
            response = await self.client.request(
                call.request["messages"],
                tenant,
                correlation_id=correlation_id,
                timeout_s=call.deadline_ms / 1000 + self.grace_s,
                **options,
            )
        except SluiceTimeout as exc:
            return error_response(GatewayError(ErrorCode.TIMEOUT, str(exc)), echo)
        finally:
            self._in_flight.discard(correlation_id)
        error = response_error(response)
        if error is not None:
            return error_response(error, echo)
        created = int(time.time())
        if not call.stream:
            return json_response(
                completion_body(response, requested_model=call.model, created=created), 200, echo
            )
        chunks = stream_chunks(
            response, requested_model=call.model, created=created, include_usage=call.include_usage
        )
        stream = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **echo}
        )
        await stream.prepare(request)
        try:
            for chunk in chunks:
                await stream.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            await stream.write(b"data: [DONE]\n\n")
            await stream.write_eof()
        except ConnectionResetError:
            log.info("client %s went away mid-stream", correlation_id)
        return stream

    async def _models(self, _: web.Request) -> web.StreamResponse:
        return json_response(models_body(self.catalog, created=self.created))

    async def _feedback(self, request: web.Request) -> web.StreamResponse:
        tenant = self.resolve_tenant(bearer_key(request.headers.get("Authorization")))
        feedback = parse_feedback(await read_body(request, MAX_FEEDBACK_BYTES), tenant=tenant)
        if isinstance(feedback, GatewayError):
            return error_response(feedback)
        await self.client.feedback(feedback)
        return json_response({"accepted": True}, 202)


@asynccontextmanager
async def serve_gateway(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 0,
    readiness: ReadinessProbe | None = None,
    **options: Any,
) -> AsyncIterator[Gateway]:
    """Run the gateway (with /healthz) on host:port until the block exits; `options` go to
    `Gateway` (default_tenant, resolve_tenant, grace_s, max_body_bytes)."""
    gateway = Gateway(settings, **options)
    await gateway.start()
    try:
        runner = web.AppRunner(build_http_app(readiness or gateway.readiness, gateway=gateway))
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            yield gateway
        finally:
            await runner.cleanup()
    finally:
        await gateway.stop()
