"""Fuzzing the HTTP front door's body parsers: whatever bytes arrive, they never raise, and they
end in exactly one of two outcomes: a Request-shaped dict the validate stage will accept as a
Request (and that fits its byte limit), or a typed 400/413 error that echoes no secret value."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from schemas import ErrorCode, Feedback, Request
from sluice.codec import encode
from sluice.edge.gateway import ChatCall, GatewayError, error_reply, parse_chat_request, parse_feedback
from sluice.settings import Settings

SETTINGS = Settings(max_request_bytes=4096)
SECRET = "sk-fuzz-SECRET-5e1f0a"
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
FIELDS = "model messages max_tokens max_completion_tokens temperature response_format stream stream_options"
FIELDS += (
    " context metadata deadline_ms n top_p user tools stop logprobs tenant api_key reply_to correlation_id"
)
field_names = st.sampled_from(FIELDS.split())

# Bodies a well-behaved OpenAI client sends: most are accepted, so both outcomes get exercised.
text_parts = st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}), max_size=3
)
good_messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "developer", "user", "assistant"]),
            "content": st.text() | text_parts,
        },
        optional={"name": st.text(max_size=8)},
    ),
    min_size=1,
    max_size=4,
)
good_bodies = st.fixed_dictionaries(
    {"messages": good_messages},
    optional={
        "model": st.sampled_from(["auto", "sim-small", "gpt-4o"]),
        "max_tokens": st.integers(1, 4096),
        "temperature": st.floats(0, 2, allow_nan=False),
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "deadline_ms": st.integers(100, 600_000),
        "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
        "context": st.lists(
            st.fixed_dictionaries({"id": st.text(min_size=1, max_size=5), "text": st.text()}), max_size=2
        ),
        "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
        "n": st.just(1),
        "top_p": st.floats(0, 1),
        "user": st.text(max_size=10),
    },
)
# And what a careless or hostile one sends.
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "", "USER"])
wild_messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles | json_values, "content": st.text(max_size=50) | json_values},
        optional={"name": st.text(max_size=8), "tool_calls": json_values},
    ),
    max_size=4,
)
wild_bodies = st.fixed_dictionaries(
    {"messages": wild_messages | json_values},
    optional={
        "model": st.sampled_from(["auto", "", "x" * 200]) | json_values,
        "max_tokens": st.integers(-5, 10_000) | json_values,
        "temperature": st.floats(-1, 3, allow_nan=False) | json_values,
        "stream": st.booleans() | json_values,
        "deadline_ms": st.integers(0, 10**7) | json_values,
        "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5) | json_values, max_size=3),
        "n": st.integers(0, 3) | st.booleans(),
        "top_p": json_values,
    },
)
openai_bodies = good_bodies | wild_bodies


def check(raw: bytes, api_key: str | None = None) -> ChatCall | GatewayError:
    outcome = parse_chat_request(
        raw, correlation_id="fuzz-1", tenant="demo", api_key=api_key, settings=SETTINGS
    )
    if isinstance(outcome, ChatCall):
        request = Request.model_validate(outcome.request)  # what the validate stage will do
        assert request.correlation_id == "fuzz-1" and request.tenant == "demo"
        assert len(encode(outcome.request)) <= SETTINGS.max_request_bytes
        assert SETTINGS.min_deadline_ms <= request.deadline_ms <= SETTINGS.max_deadline_ms
        assert outcome.deadline_ms == request.deadline_ms
        assert outcome.include_usage <= outcome.stream
    else:
        assert isinstance(outcome, GatewayError)
        assert outcome.code in (ErrorCode.INVALID_REQUEST, ErrorCode.PAYLOAD_TOO_LARGE)
        status, body, _ = error_reply(outcome)
        assert status == (400 if outcome.code is ErrorCode.INVALID_REQUEST else 413)
        assert body["error"]["message"] and SECRET not in body["error"]["message"]
        orjson.dumps(body)  # always serializable
    return outcome


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    check(json.dumps(value).encode())


@FUZZ
@given(openai_bodies)
def test_openai_shaped_bodies(body: dict[str, Any]) -> None:
    check(json.dumps(body).encode(), api_key="sk-key")


@FUZZ
@given(openai_bodies, field_names, json_values)
def test_any_field_with_any_value(body: dict[str, Any], name: str, value: Any) -> None:
    body[name] = value
    check(json.dumps(body).encode())


@FUZZ
@given(field_names, st.sampled_from([SECRET, [SECRET], {"k": SECRET}, {"role": SECRET, "content": 1}]))
def test_errors_never_echo_values(name: str, value: Any) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}, value], name: value}
    outcome = check(json.dumps(body).encode())
    assert isinstance(outcome, GatewayError)


@FUZZ
@given(
    st.integers(0, 3 * SETTINGS.max_request_bytes), st.sampled_from(["x", "é", "\u2028", '"', "\\", "\x00"])
)
def test_huge_strings(size: int, char: str) -> None:
    outcome = check(json.dumps({"messages": [{"role": "user", "content": char * size}]}).encode())
    if size > 2 * SETTINGS.max_request_bytes:
        assert isinstance(outcome, GatewayError) and outcome.code is ErrorCode.PAYLOAD_TOO_LARGE


@FUZZ
@given(
    st.integers(1, 3000), st.sampled_from(["[", '{"a":']), st.sampled_from(["messages", "response_format"])
)
def test_deep_nesting(depth: int, opener: str, field: str) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth
    outcome = check(f'{{"{field}": {nested}}}'.encode())
    assert isinstance(outcome, GatewayError)


@FUZZ
@given(st.binary(min_size=1, max_size=60))
def test_invalid_utf8_inside_strings(noise: bytes) -> None:
    assume(not _is_utf8(noise))
    check(b'{"messages": [{"role": "user", "content": "' + noise + b'"}]}')


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@FUZZ
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_feedback_parser_never_raises(raw: bytes) -> None:
    outcome = parse_feedback(raw, tenant="demo")
    if isinstance(outcome, Feedback):
        assert outcome.tenant == "demo"
        encode(outcome)
    else:
        assert isinstance(outcome, GatewayError)
        assert outcome.code in (
            ErrorCode.INVALID_REQUEST,
            ErrorCode.PAYLOAD_TOO_LARGE,
            ErrorCode.UNAUTHORIZED,
        )


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "request_id": st.text(max_size=140) | json_values,
            "rating": st.sampled_from([-1, 0, 1]) | json_values,
        },
        optional={"tenant": st.sampled_from(["demo", "acme"]) | json_values, "label": json_values},
    )
)
def test_feedback_shaped_bodies(body: dict[str, Any]) -> None:
    test_feedback_parser_never_raises.hypothesis.inner_test(json.dumps(body).encode())  # type: ignore[attr-defined]
