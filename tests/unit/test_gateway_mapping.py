"""The HTTP front door's pure mappings (OpenAI body <-> Request, Response <-> OpenAI body, error
code -> status), plus its handlers in-process against a fake SluiceClient (no Kafka)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from schemas import (
    Checks,
    ErrorCode,
    ErrorInfo,
    Feedback,
    Request,
    Response,
    Stage,
    Status,
    StreamChunk,
    Usage,
)
from sluice.edge.client import SluiceTimeout
from sluice.edge.gateway import (
    ERROR_STATUS,
    ChatCall,
    Gateway,
    GatewayError,
    bearer_key,
    completion_body,
    correlation_id_from,
    error_reply,
    finish_reason,
    models_body,
    parse_chat_request,
    parse_feedback,
    response_error,
    sluice_object,
    sse_body,
    stream_chunks,
)
from sluice.edge.http import build_http_app
from sluice.outcome import request_id_for
from sluice.providers.catalog import BUILTIN_CATALOG
from sluice.settings import Settings

SETTINGS = Settings(max_request_bytes=4096)
EXPECTED: dict[ErrorCode, tuple[int, str]] = {
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
USER_HI = [{"role": "user", "content": "hi"}]


def parse(
    body: Any, *, api_key: str | None = "sk-test", settings: Settings = SETTINGS
) -> ChatCall | GatewayError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_chat_request(raw, correlation_id="cid-1", tenant="demo", api_key=api_key, settings=settings)


def ok(body: Any, **kwargs: Any) -> ChatCall:
    call = parse(body, **kwargs)
    assert isinstance(call, ChatCall), call.message if isinstance(call, GatewayError) else call
    return call


def refused(body: Any, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> GatewayError:
    error = parse(body)
    assert isinstance(error, GatewayError), f"accepted: {error}"
    assert error.code is code, (error.code, error.message)
    return error


def answer(**changes: Any) -> Response:
    base: dict[str, Any] = {
        "correlation_id": "cid-1",
        "request_id": "req-1",
        "tenant": "demo",
        "status": Status.OK,
        "model": "sim-small",
        "content": "Hello there.",
        "usage": Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
        "cost_usd": 0.0012,
        "latency_ms": 42.5,
        "checks": Checks(groundedness=0.9, hallucination=False, flags=["pii_redacted"]),
    }
    return Response.model_validate({**base, **changes})


def failed(code: ErrorCode, status: Status = Status.REJECTED) -> Response:
    return answer(
        status=status,
        content=None,
        error=ErrorInfo(code=code, message=f"{code} happened", stage=Stage.VALIDATE),
    )


# --- errors -------------------------------------------------------------------------------------


def test_every_error_code_has_its_documented_status_and_type() -> None:
    assert set(ERROR_STATUS) == set(ErrorCode)
    for code, (status, kind) in EXPECTED.items():
        got_status, body, headers = error_reply(GatewayError(code, "why", "field"))
        assert (got_status, body["error"]["type"]) == (status, kind), code
        assert body == {"error": {"message": "why", "type": kind, "code": code.value, "param": "field"}}
        assert ("Retry-After" in headers) == (status == 429), code
        if status == 429:
            assert int(headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    ("code", "hint", "header"),
    [
        (ErrorCode.RATE_LIMITED, 2.3, "3"),  # whole seconds, rounded up
        (ErrorCode.RATE_LIMITED, 0.01, "1"),  # never 0: a client would retry at once
        (ErrorCode.BUDGET_EXCEEDED, 41_000.2, "41001"),
        (ErrorCode.BUDGET_EXCEEDED, None, "60"),  # no hint: the default
    ],
)
def test_retry_after_comes_from_the_pipelines_hint(code: ErrorCode, hint: float | None, header: str) -> None:
    response = failed(code)
    assert response.error is not None
    response.error.retry_after_s = hint
    error = response_error(response)
    assert error is not None
    status, _, headers = error_reply(error)
    assert status == 429 and headers == {"Retry-After": header}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_a_pipeline_error_becomes_that_error(code: ErrorCode) -> None:
    error = response_error(failed(code))
    assert error is not None and error.code is code and error.message == f"{code} happened"


def test_ok_is_not_an_error_and_a_failure_without_error_info_is_internal() -> None:
    assert response_error(answer()) is None
    error = response_error(answer(status=Status.FAILED, content=None))
    assert error is not None and error.code is ErrorCode.INTERNAL


# --- response mapping ---------------------------------------------------------------------------


def test_completion_body_is_openais_shape_plus_the_sluice_object() -> None:
    body = completion_body(answer(), requested_model="auto", created=1700000000)
    parsed = ChatCompletion.model_validate(body)  # what the official SDK does with it
    assert parsed.id == "chatcmpl-req-1" and parsed.object == "chat.completion"
    assert parsed.model == "sim-small" and parsed.created == 1700000000
    assert parsed.choices[0].message.role == "assistant"
    assert parsed.choices[0].message.content == "Hello there."
    assert parsed.choices[0].finish_reason == "stop"
    assert parsed.usage is not None and parsed.usage.total_tokens == 7 and parsed.usage.prompt_tokens == 3
    assert body["sluice"] == {
        "request_id": "req-1",
        "status": "ok",
        "cost_usd": 0.0012,
        "cached": False,
        "latency_ms": 42.5,
        "checks": {
            "groundedness": 0.9,
            "hallucination": False,
            "schema_valid": None,
            "flags": ["pii_redacted"],
        },
    }


def test_model_falls_back_to_the_requested_one() -> None:
    assert completion_body(answer(model=None), requested_model="sim-large", created=0)["model"] == "sim-large"


def test_finish_reason_is_length_only_when_truncated() -> None:
    assert finish_reason(answer()) == "stop"
    truncated = answer(checks=Checks(flags=["pii_redacted", "truncated"]))
    assert finish_reason(truncated) == "length"
    assert (
        completion_body(truncated, requested_model="auto", created=0)["choices"][0]["finish_reason"]
        == "length"
    )


def test_sluice_object_carries_cached_and_checks() -> None:
    body = sluice_object(answer(cached=True, checks=Checks(schema_valid=True)))
    assert body["cached"] is True and body["checks"]["schema_valid"] is True


def test_stream_chunks_role_then_all_content_then_finish() -> None:
    chunks = stream_chunks(answer(), requested_model="auto", created=5, usage=False)
    parsed = [ChatCompletionChunk.model_validate(chunk) for chunk in chunks]
    assert [c.object for c in parsed] == ["chat.completion.chunk"] * 3
    assert {c.id for c in parsed} == {"chatcmpl-req-1"}
    assert parsed[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in parsed) == "Hello there."
    assert [c.choices[0].finish_reason for c in parsed] == [None, None, "stop"]
    assert chunks[-1]["sluice"]["request_id"] == "req-1"


def test_stream_usage_chunk_when_asked() -> None:
    chunks = stream_chunks(answer(), requested_model="auto", created=5, usage=True)
    last = ChatCompletionChunk.model_validate(chunks[-1])
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens == 4


def test_sse_body_is_data_lines_ending_in_done() -> None:
    raw = sse_body(stream_chunks(answer(), requested_model="auto", created=5, usage=False))
    events = raw.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(event.startswith("data: ") for event in events[:-1])
    assert [orjson.loads(event[6:])["object"] for event in events[:-2]] == ["chat.completion.chunk"] * 3


def test_models_list_has_auto_and_the_catalog() -> None:
    body = models_body(BUILTIN_CATALOG, created=9)
    assert body["object"] == "list"
    models = [Model.model_validate(entry) for entry in body["data"]]
    assert [m.id for m in models] == ["auto", "sim-small", "sim-medium", "sim-large"]
    assert {m.owned_by for m in models} == {"sluice"} and {m.object for m in models} == {"model"}


# --- request mapping ----------------------------------------------------------------------------


def test_openai_fields_map_onto_the_request() -> None:
    call = ok(
        {
            "model": "sim-medium",
            "messages": [{"role": "system", "content": "be brief"}, *USER_HI],
            "max_tokens": 64,
            "temperature": 0.2,
            "response_format": {"type": "json_object"},
            "context": [{"id": "doc-1", "text": "grounding"}],
            "metadata": {"team": "a"},
            "deadline_ms": 5000,
        }
    )
    assert call.request == {
        "correlation_id": "cid-1",
        "tenant": "demo",
        "api_key": "sk-test",
        "messages": [{"role": "system", "content": "be brief"}, *USER_HI],
        "model": "sim-medium",
        "max_tokens": 64,
        "temperature": 0.2,
        "response_format": {"type": "json_object"},
        "context": [{"id": "doc-1", "text": "grounding"}],
        "metadata": {"team": "a"},
        "deadline_ms": 5000,
    }
    assert call.deadline_ms == 5000 and not call.stream
    assert Request.model_validate(call.request).api_key is not None  # a valid Kafka Request


def test_defaults_are_left_to_the_pipeline_and_no_key_means_no_api_key() -> None:
    call = ok({"messages": USER_HI}, api_key=None)
    assert call.request == {"correlation_id": "cid-1", "tenant": "demo", "messages": USER_HI}
    assert call.deadline_ms == 30_000


def test_max_completion_tokens_and_json_schema_pass_through() -> None:
    schema = {"name": "answer", "schema": {"type": "object"}, "strict": True}
    call = ok(
        {
            "messages": USER_HI,
            "max_completion_tokens": 12,
            "response_format": {"type": "json_schema", "json_schema": schema},
        }
    )
    assert call.request["max_tokens"] == 12
    assert call.request["response_format"] == {"type": "json_schema", "json_schema": schema}
    assert ok({"messages": USER_HI, "max_tokens": 7, "max_completion_tokens": 7}).request["max_tokens"] == 7
    refused({"messages": USER_HI, "max_tokens": 7, "max_completion_tokens": 8})


def test_developer_role_and_text_parts_are_understood() -> None:
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    call = ok({"messages": [{"role": "developer", "content": "rules"}, {"role": "user", "content": parts}]})
    assert call.request["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "one\ntwo"},
    ]


def test_streaming_flags() -> None:
    assert ok({"messages": USER_HI, "stream": True}).stream
    call = ok({"messages": USER_HI, "stream": True, "stream_options": {"include_usage": True}})
    assert call.stream and call.include_usage
    assert not ok(
        {"messages": USER_HI, "stream": False, "stream_options": {"include_usage": True}}
    ).include_usage
    refused({"messages": USER_HI, "stream": "yes"})


def test_harmless_openai_fields_are_accepted_and_ignored() -> None:
    extras = {"n": 1, "top_p": 0.9, "user": "u-1", "seed": 3, "store": False, "stream_options": None}
    extras |= {
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "logprobs": False,
        "tools": None,
        "stop": None,
    }
    call = ok({"messages": USER_HI, **extras})
    assert set(call.request) == {"correlation_id", "tenant", "api_key", "messages"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER_HI, "tools": [{"type": "function"}]}, "tools.0.function"),
        ({"messages": USER_HI, "stop": ["\n"] * 5}, "stop"),
        ({"messages": USER_HI, "parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"messages": USER_HI, "n": 2}, "n"),
        ({"messages": USER_HI, "n": True}, "n"),
        ({"messages": USER_HI, "logprobs": True}, "logprobs"),
        ({"messages": USER_HI, "presence_penalty": 0.5}, "presence_penalty"),
        ({"messages": USER_HI, "reply_to": "elsewhere"}, "reply_to"),
        ({"messages": USER_HI, "tenant": "acme"}, "tenant"),
        ({"messages": USER_HI, "correlation_id": "mine"}, "correlation_id"),
        ({"messages": USER_HI, "temprature": 0.1}, "temprature"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0"),  # no tool_call_id
        ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "messages.0"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
        ({"messages": [{"role": "assistant", "content": None}]}, "messages[0].content"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({}, "messages"),
        ({"messages": USER_HI, "temperature": "0.5"}, "temperature"),
        ({"messages": USER_HI, "temperature": True}, "temperature"),
        ({"messages": USER_HI, "temperature": 3}, "temperature"),
        ({"messages": USER_HI, "max_tokens": 1.5}, "max_tokens"),
        ({"messages": USER_HI, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER_HI, "model": 7}, "model"),
        ({"messages": USER_HI, "metadata": {"a": 1}}, "metadata.a"),
        ({"messages": USER_HI, "context": [{"id": "", "text": "x"}]}, "context.0.id"),
        ({"messages": USER_HI, "response_format": {"type": "xml"}}, "response_format.type"),
        ({"messages": USER_HI, "deadline_ms": 5}, "deadline_ms"),
        ({"messages": USER_HI, "deadline_ms": 10_000_000}, "deadline_ms"),
    ],
)
def test_unsupported_or_wrong_fields_are_named(body: dict[str, Any], param: str) -> None:
    error = refused(body)
    assert error.param == param
    status, reply, _ = error_reply(error)
    assert status == 400 and param.split(".")[0].split("[")[0] in reply["error"]["message"]


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"null", b'{"messages": [}', b'{"a": NaN}'],
)
def test_bodies_that_are_not_json_objects_are_400(raw: bytes) -> None:
    refused(raw)


def test_deep_nesting_is_refused_before_it_can_hurt() -> None:
    deep: Any = {"type": "object"}
    for _ in range(200):
        deep = {"nested": deep}
    refused({"messages": USER_HI, "response_format": {"type": "json_schema", "json_schema": deep}})
    refused(b"[" * 3000 + b"]" * 3000)  # past orjson's own 1024-level limit


def test_oversized_requests_are_413_at_either_limit() -> None:
    just_over = refused({"messages": [{"role": "user", "content": "x" * 4200}]}, ErrorCode.PAYLOAD_TOO_LARGE)
    assert just_over.param == "messages"
    refused({"messages": [{"role": "user", "content": "x" * 50_000}]}, ErrorCode.PAYLOAD_TOO_LARGE)
    assert isinstance(parse({"messages": [{"role": "user", "content": "x" * 3500}]}), ChatCall)


# --- headers ------------------------------------------------------------------------------------


def test_bearer_key() -> None:
    assert bearer_key(None) is None
    assert bearer_key("Bearer sk-abc") == "sk-abc"
    assert bearer_key("bearer   sk-abc  ") == "sk-abc"
    for bad in [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcg==",
        "sk-abc",
        "Bearer sk\udcff",
        "Bearer " + "k" * 2000,
    ]:
        with pytest.raises(GatewayError) as caught:
            bearer_key(bad)
        assert caught.value.code is ErrorCode.UNAUTHORIZED


def test_correlation_id_from_header_or_new() -> None:
    first, second = correlation_id_from(None), correlation_id_from(None)
    assert first != second and uuid.UUID(first)
    assert correlation_id_from("client-123") == "client-123"
    assert correlation_id_from("x" * 128) == "x" * 128
    for bad in ["", "x" * 129, "tab\there", "caf\u00e9", "bad\udcff"]:
        with pytest.raises(GatewayError) as caught:
            correlation_id_from(bad)
        assert caught.value.code is ErrorCode.INVALID_REQUEST and caught.value.param == "X-Request-Id"


# --- feedback -----------------------------------------------------------------------------------


def test_feedback_tenant_defaults_to_the_keys_and_completion_ids_are_accepted() -> None:
    feedback = parse_feedback(
        b'{"request_id": "chatcmpl-req-1", "rating": -1, "label": "unhelpful"}', tenant="demo"
    )
    assert feedback == Feedback(request_id="req-1", tenant="demo", rating=-1, label="unhelpful")
    same = parse_feedback(b'{"request_id": "req-1", "tenant": "demo", "rating": 1}', tenant="demo")
    assert isinstance(same, Feedback) and same.rating == 1


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"request_id": "r", "tenant": "acme", "rating": 1}', ErrorCode.UNAUTHORIZED),
        (b'{"request_id": "r", "rating": true}', ErrorCode.INVALID_REQUEST),
        (b'{"request_id": "r", "rating": 5}', ErrorCode.INVALID_REQUEST),
        (b'{"request_id": "r", "rating": "1"}', ErrorCode.INVALID_REQUEST),
        (b'{"rating": 1}', ErrorCode.INVALID_REQUEST),
        (b'{"request_id": "r", "rating": 1, "extra": 1}', ErrorCode.INVALID_REQUEST),
        (b"\xff", ErrorCode.INVALID_REQUEST),
        (b"[]", ErrorCode.INVALID_REQUEST),
        (b'{"request_id": "' + b"r" * 20_000 + b'"}', ErrorCode.PAYLOAD_TOO_LARGE),
    ],
)
def test_bad_feedback_is_refused(raw: bytes, code: ErrorCode) -> None:
    error = parse_feedback(raw, tenant="demo")
    assert isinstance(error, GatewayError) and error.code is code


# --- handlers against a fake client -------------------------------------------------------------


class FakeClient:
    """Stands in for SluiceClient: answers with `reply`, records what was sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.feedbacks: list[Feedback] = []
        self.reply: Response | Exception = answer()
        self.delay_s = 0.0

    async def request(self, **kwargs: Any) -> Response:
        self.sent.append(kwargs)
        await asyncio.sleep(self.delay_s)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply.model_copy(update={"correlation_id": kwargs["correlation_id"]})

    async def stream(self, **kwargs: Any) -> AsyncIterator[StreamChunk | Response]:
        """Like SluiceClient.stream: the answer's text in pieces, then the Response."""
        response = await self.request(**kwargs)
        text = response.content or "" if response.status is Status.OK else ""
        for offset in range(0, len(text), 5):
            yield StreamChunk(
                correlation_id=response.correlation_id,
                request_id=response.request_id,
                tenant=response.tenant,
                model=response.model or "",
                seq=offset // 5,
                offset=offset,
                delta=text[offset : offset + 5],
            )
        yield response

    async def feedback(self, feedback: Feedback) -> None:
        self.feedbacks.append(feedback)


@pytest.fixture()
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, FakeClient]]:
    gateway = Gateway(SETTINGS)
    fake = FakeClient()
    gateway._client = fake  # type: ignore[assignment]
    server = TestServer(build_http_app(gateway.readiness, gateway=gateway))
    await server.start_server()
    try:
        async with httpx.AsyncClient(base_url=str(server.make_url("/v1")), timeout=10) as http:
            yield http, fake
    finally:
        await server.close()


async def test_handler_round_trip(served: tuple[httpx.AsyncClient, FakeClient]) -> None:
    http, fake = served
    reply = await http.post(
        "/chat/completions",
        json={"model": "auto", "messages": USER_HI},
        headers={"Authorization": "Bearer sk-1", "X-Request-Id": "mine-1"},
    )
    assert reply.status_code == 200 and reply.headers["X-Request-Id"] == "mine-1"
    assert reply.json()["choices"][0]["message"]["content"] == "Hello there."
    assert fake.sent[0]["correlation_id"] == "mine-1" and fake.sent[0]["api_key"] == "sk-1"
    assert fake.sent[0]["tenant"] == "demo" and fake.sent[0]["timeout_s"] == pytest.approx(35.0)


async def test_handler_stream(served: tuple[httpx.AsyncClient, FakeClient]) -> None:
    http, fake = served
    reply = await http.post("/chat/completions", json={"messages": USER_HI, "stream": True})
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/event-stream")
    assert reply.text.endswith("data: [DONE]\n\n")
    events = [orjson.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == fake.reply.content  # type: ignore[union-attr]
    assert len(deltas) > 3 and events[-1]["choices"][0]["finish_reason"] == "stop" and "sluice" in events[-1]


async def test_handler_stream_cut_by_its_checks_ends_with_content_filter(
    served: tuple[httpx.AsyncClient, FakeClient],
) -> None:
    http, fake = served
    fake.reply = answer().model_copy(
        update={"status": Status.BLOCKED, "content": "Withheld.", "finish_reason": "content_filter"}
    )
    reply = await http.post("/chat/completions", json={"messages": USER_HI, "stream": True})
    assert reply.status_code == 200
    events = [orjson.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")]
    assert events[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert [e["choices"][0]["delta"].get("content") for e in events][-2] == "Withheld."


@pytest.mark.parametrize(
    "code", [ErrorCode.RATE_LIMITED, ErrorCode.PROMPT_INJECTION, ErrorCode.RESPONSE_INVALID]
)
async def test_handler_maps_pipeline_errors(
    served: tuple[httpx.AsyncClient, FakeClient], code: ErrorCode
) -> None:
    http, fake = served
    fake.reply = failed(code)
    reply = await http.post("/chat/completions", json={"messages": USER_HI, "stream": True})
    assert reply.status_code == EXPECTED[code][0]
    assert reply.json()["error"]["code"] == code.value
    assert ("Retry-After" in reply.headers) == (code is ErrorCode.RATE_LIMITED)


async def test_handler_timeout_is_504(served: tuple[httpx.AsyncClient, FakeClient]) -> None:
    http, fake = served
    fake.reply = SluiceTimeout("cid", 1.0)
    reply = await http.post("/chat/completions", json={"messages": USER_HI})
    assert reply.status_code == 504 and reply.json()["error"]["code"] == "timeout"


async def test_handler_unexpected_failure_is_a_json_500(served: tuple[httpx.AsyncClient, FakeClient]) -> None:
    http, fake = served
    fake.reply = RuntimeError("kafka fell over")
    reply = await http.post("/chat/completions", json={"messages": USER_HI})
    assert reply.status_code == 500 and reply.json()["error"]["code"] == "internal"
    assert "kafka" not in reply.text


async def test_handler_refuses_a_twin_of_an_in_flight_request_id(
    served: tuple[httpx.AsyncClient, FakeClient],
) -> None:
    http, fake = served
    fake.delay_s = 0.3
    headers = {"X-Request-Id": "twin"}
    first, second = await asyncio.gather(
        http.post("/chat/completions", json={"messages": USER_HI}, headers=headers),
        http.post("/chat/completions", json={"messages": USER_HI}, headers=headers),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 400]
    assert len(fake.sent) == 1


async def test_handler_bad_input_never_reaches_the_client(
    served: tuple[httpx.AsyncClient, FakeClient],
) -> None:
    http, fake = served
    for content, status in [(b"\xff\xfe", 400), (b"{" * 100, 400), (b"x" * (3 * 4096), 413)]:
        reply = await http.post("/chat/completions", content=content)
        assert reply.status_code == status and "error" in reply.json()
    reply = await http.post(
        "/chat/completions", json={"messages": USER_HI}, headers={"Authorization": "Basic x"}
    )
    assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"
    assert fake.sent == []


async def test_handler_models_and_feedback(served: tuple[httpx.AsyncClient, FakeClient]) -> None:
    http, fake = served
    models = await http.get("/models")
    assert [m["id"] for m in models.json()["data"]][:2] == ["auto", "sim-small"]
    mine = request_id_for("sluice.requests", 0, 1, tenant="demo")
    accepted = await http.post(
        "/feedback", json={"request_id": f"chatcmpl-{mine}", "rating": 1, "label": "good"}
    )
    assert accepted.status_code == 202 and accepted.json() == {"accepted": True}
    assert fake.feedbacks == [Feedback(request_id=mine, tenant="demo", rating=1, label="good")]
    # another tenant's request, and ids no request ever had: 404, whichever gateway is asked
    for other in (request_id_for("sluice.requests", 0, 2, tenant="acme"), "req-1", mine.upper()):
        refused = await http.post("/feedback", json={"request_id": other, "rating": -1})
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found", other
    assert len(fake.feedbacks) == 1
    refused_reply = await http.post("/feedback", json={"request_id": "r", "rating": 3})
    assert refused_reply.status_code == 400 and refused_reply.json()["error"]["param"] == "rating"


async def test_healthz_is_untouched_and_routes_need_a_connected_gateway() -> None:
    gateway = Gateway(SETTINGS)
    app = build_http_app(gateway.readiness, gateway=gateway)
    assert isinstance(app, web.Application)
    server = TestServer(app)
    await server.start_server()
    try:
        async with httpx.AsyncClient(base_url=str(server.make_url("/")), timeout=10) as http:
            health = await http.get("/healthz")
            assert health.status_code == 503 and health.json()["parts"] == {"gateway": False}
            reply = await http.post("/v1/chat/completions", json={"messages": USER_HI})
            assert reply.status_code == 503 and reply.json()["error"]["code"] == "model_unavailable"
    finally:
        await server.close()
