"""The wire contract in code: generated JSON Schemas stay in sync, unknown fields are errors,
api keys never leak, and Request defaults match the contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest
from pydantic import SecretStr, ValidationError

from schemas import (
    WIRE_MESSAGES,
    ChatMessage,
    Checks,
    ContextPassage,
    DeadLetter,
    Envelope,
    ErrorInfo,
    Event,
    Feedback,
    Inference,
    Request,
    RequestSummary,
    Response,
    ResponseFormat,
    RouteDecision,
    Usage,
    WireModel,
)
from schemas.generate import JSON_DIR, render_all
from sluice.codec import encode

REGENERATE = "run `/work/venv/bin/python -m schemas.generate` (or `python -m schemas.generate`) and commit"
SECRET = "sk-test-DO-NOT-LEAK-4242"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

MINIMAL_REQUEST: dict[str, Any] = {
    "correlation_id": "c-1",
    "tenant": "acme",
    "messages": [{"role": "user", "content": "hello"}],
}


def _request(**changes: Any) -> Request:
    return Request.model_validate({**MINIMAL_REQUEST, **changes})


# One valid document per top-level wire message (JSON mode, as it travels).
EXAMPLES: dict[str, dict[str, Any]] = {
    "request": {
        **MINIMAL_REQUEST,
        "reply_to": "sluice.responses",
        "model": "sim-small",
        "max_tokens": 10,
        "temperature": 0.0,
        "context": [{"id": "doc-1", "text": "passage"}],
        "response_format": {"type": "json_object"},
        "metadata": {"k": "v"},
        "deadline_ms": 1000,
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "stop": ["END"],
        "stream": True,
    },
    "response": {
        "correlation_id": "c-1",
        "request_id": "r-1",
        "tenant": "acme",
        "status": "failed",
        "error": {"code": "timeout", "message": "too slow", "stage": "infer"},
    },
    "envelope": {
        "request_id": "r-1",
        "correlation_id": "c-1",
        "tenant": "acme",
        "reply_to": "sluice.responses",
        "received_at": NOW.isoformat(),
        "deadline_at": NOW.isoformat(),
        "request": MINIMAL_REQUEST,
        "route": {"model": "sim-small", "reason": "auto"},
        "inference": {"model": "sim-small", "content": "hi", "usage": {"prompt_tokens": 1}},
    },
    "event": {
        "event_id": "e-1",
        "request_id": "r-1",
        "correlation_id": "c-1",
        "tenant": "acme",
        "stage": "validate",
        "status": "ok",
        "ts": NOW.isoformat(),
        "summary": {
            "received_at": NOW.isoformat(),
            "finished_at": NOW.isoformat(),
            "status": "ok",
            "latency_ms": 1.0,
        },
    },
    "feedback": {"request_id": "r-1", "tenant": "acme", "rating": 1, "label": "good"},
    "deadletter": {
        "reason": "not JSON",
        "raw_base64": "AA==",
        "source_topic": "sluice.requests",
        "partition": 0,
        "offset": 1,
        "stage": "validate",
        "ts": NOW.isoformat(),
    },
    "route_advice": {
        "route": "simple",
        "model": "sim-small",
        "demote": True,
        "satisfaction": -0.6,
        "samples": 40,
        "reason": "rated -0.60 over 40 ratings",
        "ts": NOW.isoformat(),
    },
    "admission": {
        "settlement": {
            "request_id": "r-1",
            "tenant": "acme",
            "status": "ok",
            "cost_usd": 0.0012,
            "prompt_tokens": 12,
            "completion_tokens": 30,
            "finished_at": NOW.isoformat(),
        }
    },
    "alert": {
        "rule": "error-rate",
        "metric": "error_rate",
        "state": "firing",
        "severity": "critical",
        "value": 0.31,
        "threshold": 0.05,
        "above": True,
        "window_minutes": 5,
        "since": "2026-01-01T00:00:00Z",
        "ts": "2026-01-01T00:00:15Z",
        "message": "error_rate 0.31 > 0.05 over 5 min",
    },
    "stream_chunk": {
        "correlation_id": "c-1",
        "request_id": "r-1",
        "tenant": "acme",
        "model": "sim-small",
        "seq": 0,
        "offset": 0,
        "delta": "Hello",
    },
}

# Every nested wire model with one valid document, so `extra="forbid"` is checked at each level.
NESTED_EXAMPLES: list[tuple[type[WireModel], dict[str, Any]]] = [
    (ChatMessage, {"role": "user", "content": "x"}),
    (
        ChatMessage,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    ),
    (ChatMessage, {"role": "tool", "content": "result", "tool_call_id": "call_1"}),
    (ContextPassage, {"id": "d", "text": "t"}),
    (ResponseFormat, {"type": "text"}),
    (Usage, {}),
    (Checks, {}),
    (ErrorInfo, {"code": "internal", "message": "m", "stage": "route"}),
    (RouteDecision, {"model": "m", "reason": "r"}),
    (Inference, {"model": "m"}),
    (RequestSummary, EXAMPLES["event"]["summary"]),
]


# --- drift ---------------------------------------------------------------------------------------


def test_every_wire_message_has_an_example() -> None:
    assert set(EXAMPLES) == set(WIRE_MESSAGES)


def test_generated_json_schemas_match_the_models() -> None:
    rendered = render_all()
    on_disk = {path.name: path.read_text() for path in JSON_DIR.glob("*.json")}
    missing = sorted(set(rendered) - set(on_disk))
    stale = sorted(set(on_disk) - set(rendered))
    changed = sorted(name for name in set(rendered) & set(on_disk) if rendered[name] != on_disk[name])
    assert not (missing or stale or changed), (
        f"schemas/json is out of date (missing {missing}, stale {stale}, changed {changed}): {REGENERATE}"
    )


@pytest.mark.parametrize("name", sorted(WIRE_MESSAGES))
def test_generated_schema_is_valid_and_forbids_unknown_fields(name: str) -> None:
    schema = json.loads((JSON_DIR / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    objects = [schema, *schema.get("$defs", {}).values()]
    for definition in objects:
        if definition.get("type") == "object" and "properties" in definition:
            assert definition.get("additionalProperties") is False, definition.get("title")


@pytest.mark.parametrize("name", sorted(WIRE_MESSAGES))
def test_example_validates_against_model_and_generated_schema(name: str) -> None:
    model = WIRE_MESSAGES[name]
    instance = model.model_validate(EXAMPLES[name])
    wire = orjson.loads(encode(instance))
    schema = json.loads((JSON_DIR / f"{name}.schema.json").read_text())
    jsonschema.validate(wire, schema)
    # the wire form reads back as the same message
    assert model.model_validate(wire) == instance


# --- unknown fields ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(WIRE_MESSAGES))
def test_unknown_top_level_field_is_rejected(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WIRE_MESSAGES[name].model_validate({**EXAMPLES[name], "surprise": 1})
    errors = caught.value.errors()
    assert [(e["type"], e["loc"]) for e in errors] == [("extra_forbidden", ("surprise",))]


@pytest.mark.parametrize(("model", "document"), NESTED_EXAMPLES, ids=lambda v: getattr(v, "__name__", ""))
def test_unknown_nested_field_is_rejected(model: type[WireModel], document: dict[str, Any]) -> None:
    model.model_validate(document)
    with pytest.raises(ValidationError, match="extra"):
        model.model_validate({**document, "surprise": True})


def test_request_with_extra_field_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        Request.model_validate({**MINIMAL_REQUEST, "user": "bob"})
    assert caught.value.errors()[0]["loc"] == ("user",)


def test_unknown_field_inside_a_message_is_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        _request(messages=[{"role": "user", "content": "x", "name": "bob"}])
    assert caught.value.errors()[0]["loc"] == ("messages", 0, "name")


# --- api_key -------------------------------------------------------------------------------------


def test_api_key_is_a_secret_str_hidden_from_repr_and_dumps() -> None:
    request = _request(api_key=SECRET)
    assert isinstance(request.api_key, SecretStr)
    assert request.api_key.get_secret_value() == SECRET
    assert SECRET not in repr(request)
    assert SECRET not in str(request)
    assert SECRET not in request.model_dump_json()
    assert SECRET not in str(request.model_dump())


def test_encode_request_never_contains_the_api_key() -> None:
    encoded = encode(_request(api_key=SECRET))
    assert SECRET.encode() not in encoded
    assert orjson.loads(encoded)["correlation_id"] == "c-1"


def test_encode_request_without_api_key_round_trips() -> None:
    request = _request()
    assert Request.model_validate(orjson.loads(encode(request))) == request


def test_envelope_carrying_a_request_never_contains_the_api_key() -> None:
    envelope = Envelope.model_validate(EXAMPLES["envelope"])
    assert envelope.request.api_key is None
    assert b"api_key" in encode(envelope)  # present as null, never with a value
    assert orjson.loads(encode(envelope))["request"]["api_key"] is None


# --- defaults ------------------------------------------------------------------------------------


def test_request_defaults_follow_the_contract() -> None:
    request = _request()
    assert request.model == "auto"
    assert request.max_tokens == 256
    assert request.temperature == 0.7
    assert request.deadline_ms == 30_000
    assert request.api_key is None
    assert request.reply_to is None
    assert request.context == []
    assert request.metadata == {}
    assert request.response_format is None


@pytest.mark.parametrize("missing", ["correlation_id", "tenant", "messages"])
def test_only_three_fields_are_required(missing: str) -> None:
    document = {k: v for k, v in MINIMAL_REQUEST.items() if k != missing}
    with pytest.raises(ValidationError) as caught:
        Request.model_validate(document)
    assert caught.value.errors()[0]["loc"] == (missing,)


@pytest.mark.parametrize(
    "changes",
    [
        {"correlation_id": ""},
        {"correlation_id": "x" * 129},
        {"tenant": "Acme"},
        {"tenant": "a" * 65},
        {"tenant": "a b"},
        {"messages": []},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"max_tokens": 0},
        {"temperature": 2.5},
        {"temperature": -0.1},
        {"deadline_ms": 0},
        {"response_format": {"type": "xml"}},
        {"metadata": {"k": 1}},
    ],
)
def test_request_field_constraints(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _request(**changes)


def test_response_error_is_null_when_ok() -> None:
    response = Response(correlation_id="c", request_id="r", tenant="t", status="ok")
    assert response.error is None
    assert orjson.loads(encode(response))["error"] is None


def test_feedback_rating_is_minus_one_zero_or_one() -> None:
    with pytest.raises(ValidationError):
        Feedback(request_id="r", tenant="t", rating=2)  # type: ignore[arg-type]


def test_event_and_deadletter_encode_timestamps_as_iso_strings() -> None:
    event = Event.model_validate(EXAMPLES["event"])
    letter = DeadLetter.model_validate(EXAMPLES["deadletter"])
    assert orjson.loads(encode(event))["ts"].startswith("2025-01-02T03:04:05")
    assert orjson.loads(encode(letter))["ts"].startswith("2025-01-02T03:04:05")
