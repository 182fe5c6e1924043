"""The pure middle and last stages: sanitize, route, validate_response, and the Outcome rules
every stage follows (one response per final outcome, a summary on the final event, stable ids)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.route import route
from agents.sanitize import sanitize
from agents.validate import Decided, Limits, RawRecord, validate_record
from agents.validate_response import pii_findings, validate_response
from schemas import (
    Envelope,
    ErrorCode,
    ErrorInfo,
    Inference,
    Request,
    RouteDecision,
    Stage,
    Status,
    Usage,
)
from sluice.outcome import Outcome, event_id_for
from sluice.providers.catalog import BUILTIN_CATALOG, Catalog, ModelEntry
from sluice.tenants import TenantConfig

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
RECEIVED = NOW - timedelta(milliseconds=250)
REPLY_TO = "sluice.responses.team-a"


def make_envelope(
    *,
    request_id: str = "req-1",
    flags: list[str] | None = None,
    route_to: str | None = None,
    inference: Inference | None = None,
    **request_fields: Any,
) -> Envelope:
    fields: dict[str, Any] = {
        "correlation_id": "corr-1",
        "tenant": "acme",
        "messages": [{"role": "user", "content": "What is Kafka?"}],
        **request_fields,
    }
    return Envelope(
        request_id=request_id,
        correlation_id="corr-1",
        tenant="acme",
        reply_to=REPLY_TO,
        received_at=RECEIVED,
        deadline_at=RECEIVED + timedelta(seconds=30),
        request=Request.model_validate(fields),
        flags=flags or [],
        route=RouteDecision(model=route_to, reason="test") if route_to else None,
        inference=inference,
    )


def answered(content: str | None, model: str = "sim-small", **request_fields: Any) -> Envelope:
    inference = Inference(
        model=model,
        content=content,
        finish_reason="stop",
        usage=Usage(prompt_tokens=4, completion_tokens=6, total_tokens=10),
        cost_usd=0.0042,
    )
    envelope = make_envelope(route_to=model, inference=inference, **request_fields)
    return envelope.model_copy(update={"tried_models": [model]})  # as infer leaves it


def assert_final(outcome: Outcome, stage: Stage, status: Status, code: ErrorCode | None) -> None:
    """A final outcome: exactly one response, no forward, and a final event carrying the summary."""
    assert outcome.forward is None
    response = outcome.response
    assert response is not None
    assert response.status is status
    assert outcome.reply_to == REPLY_TO
    assert (response.error.code if response.error else None) is code
    assert (
        response.correlation_id == "corr-1" and response.request_id == "req-1" and response.tenant == "acme"
    )
    event = outcome.event
    assert event.stage is stage
    assert event.status == status.value
    assert event.error_code is code
    assert event.request_id == response.request_id
    assert event.event_id == event_id_for("req-1", stage)
    summary = event.summary
    assert summary is not None
    assert summary.status is status
    assert summary.received_at == RECEIVED
    assert summary.finished_at == NOW
    assert summary.latency_ms == pytest.approx(250.0)
    assert response.latency_ms == pytest.approx(250.0)
    assert summary.schema_valid == response.checks.schema_valid


def assert_forward(outcome: Outcome, stage: Stage) -> Envelope:
    assert outcome.response is None
    assert outcome.reply_to is None
    assert outcome.forward is not None
    assert outcome.event.stage is stage
    assert outcome.event.status == "ok"
    assert outcome.event.summary is None
    assert outcome.event.event_id == event_id_for(outcome.forward.request_id, stage)
    return outcome.forward


def assert_forward_attempt(outcome: Outcome, attempt: int) -> Envelope:
    """validate_response sending the request back to infer: no response yet, a distinct event."""
    assert outcome.response is None
    assert outcome.forward is not None
    assert outcome.event.stage is Stage.VALIDATE_RESPONSE
    assert outcome.event.status == "ok"
    assert outcome.event.summary is None
    assert outcome.forward.attempt == attempt
    assert outcome.event.event_id == event_id_for("req-1", Stage.VALIDATE_RESPONSE, f"attempt-{attempt}")
    assert outcome.event.event_id != event_id_for("req-1", Stage.VALIDATE_RESPONSE)
    return outcome.forward


# --- sanitize ------------------------------------------------------------------------------------


def sanitized(*contents: str, **request_fields: Any) -> Outcome:
    messages = [{"role": "user", "content": content} for content in contents]
    return sanitize(make_envelope(messages=messages, **request_fields), NOW)


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ("ｈｅｌｌｏ", "hello"),  # fullwidth -> ASCII
        ("ﬁle", "file"),  # ligature
        ("x²", "x2"),  # superscript
        ("e\u0301", "é"),  # composed
        ("e\u200b\u0301", "é"),  # stripping the zero-width space lets the accent compose
        ("Be\u200b brief a\u200cb\u200dc\u2060d\ufeff", "Be brief abcd"),  # zero-width
        ("abc\u202edef\u202c\u2066x\u2069", "abcdefx"),  # bidi overrides / isolates
        ("a\x00b\x07c\x1bd\x7fe\x85f\x9f", "abcdef"),  # C0, DEL, C1
        ("line one\nline two\r\n\ttabbed", "line one\nline two\r\n\ttabbed"),  # kept
        ("plain ascii stays", "plain ascii stays"),
    ],
)
def test_sanitize_normalises_message_text(dirty: str, clean: str) -> None:
    cleaned = assert_forward(sanitized(dirty), Stage.SANITIZE)
    assert [m.content for m in cleaned.request.messages] == [clean]


@pytest.mark.parametrize(
    "dirty",
    [
        "e\u200b\u0301",  # not idempotent when invisible characters were stripped after NFKC only
        "ｆｕｌｌ\u200b\x01 width\u202e",
        "A\u030a\u200d\u0301 ﬃ ① \u2028 next",
        "plain text",
    ],
)
def test_sanitize_is_idempotent_on_its_own_output(dirty: str) -> None:
    first = assert_forward(sanitized(dirty), Stage.SANITIZE)
    second = sanitize(first, NOW)
    assert second.forward == first


# Stage-level idempotence over arbitrary text: whatever the first pass lets through, a second pass
# leaves untouched (whether it blocks is the sanitizer's business, tested with its checks).
@settings(max_examples=100, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60))
def test_sanitize_is_idempotent_on_arbitrary_text(text: str) -> None:
    first = sanitized(text or ".")
    if first.forward is None:
        return
    assert sanitize(first.forward, NOW).forward == first.forward
    for message in first.forward.request.messages:
        assert unicodedata.is_normalized("NFKC", message.content)
        assert not any(ch in message.content for ch in "\u200b\u200c\u200d\u2060\ufeff\u202e\x00\x1b\x7f")


def test_sanitize_cleans_messages_and_context_and_keeps_the_rest() -> None:
    envelope = make_envelope(
        flags=["earlier"],
        messages=[
            {"role": "system", "content": "Be\u200b brief\x07"},
            {"role": "user", "content": "ＨＥＬＬＯ\u202e\nthere"},
        ],
        context=[{"id": "doc-1", "text": "pass\u200bage\x00 one"}, {"id": "doc-2", "text": "clean"}],
    )
    outcome = sanitize(envelope, NOW)
    cleaned = assert_forward(outcome, Stage.SANITIZE)
    assert [m.content for m in cleaned.request.messages] == ["Be brief", "HELLO\nthere"]
    assert [m.role for m in cleaned.request.messages] == ["system", "user"]
    assert [(p.id, p.text) for p in cleaned.request.context] == [("doc-1", "passage one"), ("doc-2", "clean")]
    assert "earlier" in outcome.event.flags and "earlier" in cleaned.flags
    same = ("request_id", "correlation_id", "tenant", "reply_to", "received_at", "deadline_at", "route")
    assert {k: getattr(cleaned, k) for k in same} == {k: getattr(envelope, k) for k in same}
    # the input envelope is not mutated
    assert envelope.request.messages[0].content == "Be\u200b brief\x07"


# --- route ---------------------------------------------------------------------------------------


def test_auto_routes_to_the_catalog_default() -> None:
    routed = assert_forward(route(make_envelope(), BUILTIN_CATALOG, NOW), Stage.ROUTE)
    assert routed.route is not None
    assert routed.route.model == BUILTIN_CATALOG.default == "sim-small"
    assert routed.route.provider_kind == "openai"
    assert "auto" in routed.route.reason


def test_auto_takes_the_cheapest_model_and_records_the_priciest_as_baseline() -> None:
    catalog = Catalog(
        default="big",
        models=(
            ModelEntry(name="big", base_url="http://b/v1", input_price_per_1k=1, output_price_per_1k=1),
            ModelEntry(name="tiny", base_url="http://a/v1", input_price_per_1k=0, output_price_per_1k=0),
        ),
    )
    outcome = route(make_envelope(), catalog, NOW)
    routed = assert_forward(outcome, Stage.ROUTE)
    assert routed.route is not None and routed.route.model == "tiny"
    assert routed.route.fallbacks == ["big"] and routed.route.baseline_model == "big"
    assert outcome.event.model == "tiny"
    assert outcome.event.attributes["route_reason"] == routed.route.reason


def test_named_model_is_routed_to_itself() -> None:
    routed = assert_forward(route(make_envelope(model="sim-large"), BUILTIN_CATALOG, NOW), Stage.ROUTE)
    assert routed.route is not None
    assert routed.route.model == "sim-large"
    assert routed.route.reason == "requested by client"
    assert routed.route.route == "requested" and routed.route.baseline_model == "sim-large"
    assert routed.request.model == "sim-large"


def test_unknown_model_is_rejected_naming_the_known_models() -> None:
    outcome = route(make_envelope(model="gpt-9000"), BUILTIN_CATALOG, NOW)
    assert_final(outcome, Stage.ROUTE, Status.REJECTED, ErrorCode.INVALID_REQUEST)
    assert outcome.response is not None and outcome.response.error is not None
    message = outcome.response.error.message
    assert outcome.response.error.stage is Stage.ROUTE
    assert "gpt-9000" in message
    for name in ("auto", "sim-small", "sim-medium", "sim-large"):
        assert name in message


# --- validate_response ---------------------------------------------------------------------------

TENANT = TenantConfig()
MAX_RETRIES = TENANT.output.max_retries
MAX_REPAIRS = TENANT.output.max_repair_attempts


def review(envelope: Envelope) -> Outcome:
    """validate_response as the agent calls it: default tenant, the catalog, the PII detector."""
    return validate_response(envelope, NOW, tenant=TENANT, catalog=BUILTIN_CATALOG, pii_detector=pii_findings)


def retries_spent(envelope: Envelope) -> Envelope:
    """After the one retry on a stronger model (what infer and a first review leave behind)."""
    assert envelope.inference is not None
    return envelope.model_copy(
        update={
            "retries": MAX_RETRIES,
            "route": RouteDecision(model="sim-medium", reason="retry"),
            "tried_models": ["sim-small", "sim-medium"],
            "inference": envelope.inference.model_copy(update={"model": "sim-medium"}),
        }
    )


def test_good_answer_is_ok() -> None:
    outcome = review(answered("Kafka is a distributed log."))
    assert_final(outcome, Stage.VALIDATE_RESPONSE, Status.OK, None)
    response = outcome.response
    assert response is not None
    assert response.content == "Kafka is a distributed log."
    assert response.model == "sim-small"
    assert response.usage == Usage(prompt_tokens=4, completion_tokens=6, total_tokens=10)
    assert response.cost_usd == 0.0042
    assert response.error is None
    assert response.checks.schema_valid is None  # no JSON was asked for
    assert outcome.event.prompt_tokens == 4 and outcome.event.completion_tokens == 6
    assert outcome.event.cost_usd == 0.0042


@pytest.mark.parametrize("response_type", ["json_object", "json_schema"])
def test_valid_json_when_json_was_requested(response_type: str) -> None:
    outcome = review(answered('{"answer": 42}', response_format={"type": response_type}))
    assert_final(outcome, Stage.VALIDATE_RESPONSE, Status.OK, None)
    assert outcome.response is not None
    assert outcome.response.checks.schema_valid is True
    assert outcome.event.summary is not None and outcome.event.summary.schema_valid is True


@pytest.mark.parametrize("content", ["", "   \n\t", None])
def test_empty_content_is_first_retried_on_a_stronger_model(content: str | None) -> None:
    outcome = review(answered(content))
    again = assert_forward_attempt(outcome, attempt=1)
    assert again.route is not None and again.route.model == "sim-medium"
    assert again.retries == 1 and again.repair_attempts == 0
    assert again.inference is None


@pytest.mark.parametrize("content", ["", "   \n\t", None])
def test_empty_content_after_the_retry_is_response_invalid(content: str | None) -> None:
    outcome = review(retries_spent(answered(content)))
    assert_final(outcome, Stage.VALIDATE_RESPONSE, Status.FAILED, ErrorCode.RESPONSE_INVALID)
    assert outcome.response is not None and outcome.response.error is not None
    assert outcome.response.error.stage is Stage.VALIDATE_RESPONSE
    assert outcome.response.content is None
    assert outcome.response.cost_usd == 0.0042  # the call was still paid for


def test_every_call_of_a_retried_request_is_on_its_bill() -> None:
    first = answered("")  # 4 + 6 tokens, $0.0042, on sim-small
    again = assert_forward_attempt(review(first), attempt=1)
    assert again.earlier_cost_usd == 0.0042
    assert again.earlier_usage == Usage(prompt_tokens=4, completion_tokens=6, total_tokens=10)
    second = again.model_copy(
        update={
            "inference": Inference(
                model="sim-medium",
                content="A real answer.",
                finish_reason="stop",
                usage=Usage(prompt_tokens=4, completion_tokens=3, total_tokens=7),
                cost_usd=0.01,
            )
        }
    )
    outcome = review(second)
    assert_final(outcome, Stage.VALIDATE_RESPONSE, Status.OK, None)
    assert outcome.response is not None
    assert outcome.response.cost_usd == pytest.approx(0.0142)
    assert outcome.response.usage == Usage(prompt_tokens=8, completion_tokens=9, total_tokens=17)
    assert outcome.event.cost_usd == pytest.approx(0.0142)  # the requests row in ClickHouse


def test_a_retry_keeps_the_route_and_arm_it_was_routed_by() -> None:
    routed = answered("").model_copy(
        update={"route": RouteDecision(model="sim-small", reason="r", route="simple", arm="challenger")}
    )
    again = assert_forward_attempt(review(routed), attempt=1)
    assert again.route is not None
    assert (again.route.model, again.route.route, again.route.arm) == ("sim-medium", "simple", "challenger")


def test_empty_content_with_no_stronger_model_left_is_response_invalid() -> None:
    outcome = review(answered("", model="sim-large"))
    assert_final(outcome, Stage.VALIDATE_RESPONSE, Status.FAILED, ErrorCode.RESPONSE_INVALID)


@pytest.mark.parametrize("content", ['{"answer": 4', "Sure! here is JSON: {", "'single'"])
def test_invalid_json_is_first_sent_back_for_repair(content: str) -> None:
    outcome = review(answered(content, response_format={"type": "json_object"}))
    again = assert_forward_attempt(outcome, attempt=1)
    assert again.repair_attempts == 1 and again.retries == 0
    assert again.inference is None
    assert [m.role for m in again.followup] == ["assistant", "user"]
    assert again.followup[0].content == content
    assert again.request == answered(content, response_format={"type": "json_object"}).request


@pytest.mark.parametrize("content", ['{"answer": 4', "Sure! here is JSON: {", "'single'"])
def test_invalid_json_after_the_repair_is_response_invalid(content: str) -> None:
    envelope = answered(content, response_format={"type": "json_object"})
    outcome = review(envelope.model_copy(update={"repair_attempts": MAX_REPAIRS}))
    assert_final(outcome, Stage.VALIDATE_RESPONSE, Status.FAILED, ErrorCode.RESPONSE_INVALID)
    assert outcome.response is not None
    assert outcome.response.content is None
    assert outcome.response.checks.schema_valid is False
    assert outcome.event.summary is not None and outcome.event.summary.schema_valid is False


def test_text_format_does_not_check_json() -> None:
    outcome = review(answered("not json {", response_format={"type": "text"}))
    assert_final(outcome, Stage.VALIDATE_RESPONSE, Status.OK, None)
    assert outcome.response is not None and outcome.response.checks.schema_valid is None


@pytest.mark.parametrize("code", [ErrorCode.TIMEOUT, ErrorCode.MODEL_UNAVAILABLE])
def test_inference_error_is_answered_with_its_code_and_stage_infer(code: ErrorCode) -> None:
    inference = Inference(model="sim-small", error=ErrorInfo(code=code, message="boom", stage=Stage.INFER))
    envelope = make_envelope(route_to="sim-small", inference=inference, flags=["pii"])
    outcome = review(envelope)
    assert_final(outcome, Stage.VALIDATE_RESPONSE, Status.FAILED, code)
    assert outcome.response is not None and outcome.response.error is not None
    assert outcome.response.error.stage is Stage.INFER
    assert outcome.response.error.message == "boom"
    assert outcome.response.model == "sim-small"
    assert outcome.response.checks.flags == ["pii"]


def test_missing_inference_is_internal() -> None:
    outcome = review(make_envelope(route_to="sim-small"))
    assert_final(outcome, Stage.VALIDATE_RESPONSE, Status.FAILED, ErrorCode.INTERNAL)


def test_flags_reach_the_response_checks() -> None:
    envelope = answered("fine").model_copy(update={"flags": ["pii_redacted", "injection_suspected"]})
    outcome = review(envelope)
    assert outcome.response is not None
    assert set(outcome.response.checks.flags) == {"pii_redacted", "injection_suspected"}
    assert set(outcome.event.flags) == {"pii_redacted", "injection_suspected"}


# --- rules every stage follows --------------------------------------------------------------------

FINALS: dict[str, tuple[Callable[[], Outcome], Stage, Status, ErrorCode | None]] = {
    "route-unknown": (
        lambda: route(make_envelope(model="nope"), BUILTIN_CATALOG, NOW),
        Stage.ROUTE,
        Status.REJECTED,
        ErrorCode.INVALID_REQUEST,
    ),
    "vr-ok": (lambda: review(answered("hi")), Stage.VALIDATE_RESPONSE, Status.OK, None),
    "vr-empty": (
        lambda: review(retries_spent(answered(""))),
        Stage.VALIDATE_RESPONSE,
        Status.FAILED,
        ErrorCode.RESPONSE_INVALID,
    ),
    "vr-json": (
        lambda: review(
            answered("{", response_format={"type": "json_object"}).model_copy(update={"repair_attempts": 1})
        ),
        Stage.VALIDATE_RESPONSE,
        Status.FAILED,
        ErrorCode.RESPONSE_INVALID,
    ),
    "vr-infer-error": (
        lambda: review(
            make_envelope(
                inference=Inference(
                    model="m", error=ErrorInfo(code=ErrorCode.TIMEOUT, message="t", stage=Stage.INFER)
                )
            ),
        ),
        Stage.VALIDATE_RESPONSE,
        Status.FAILED,
        ErrorCode.TIMEOUT,
    ),
    "vr-no-inference": (
        lambda: review(make_envelope()),
        Stage.VALIDATE_RESPONSE,
        Status.FAILED,
        ErrorCode.INTERNAL,
    ),
}


@pytest.mark.parametrize("case", sorted(FINALS))
def test_every_final_outcome_has_one_response_and_a_summary(case: str) -> None:
    produce, stage, status, code = FINALS[case]
    outcome = produce()
    assert_final(outcome, stage, status, code)
    # deterministic: the same input gives the same event id (a redelivery replaces the row)
    assert produce().event.event_id == outcome.event.event_id


def test_validate_rejection_is_final_too() -> None:
    limits = Limits(
        max_request_bytes=1000,
        default_reply_to=REPLY_TO,
        reply_prefix="sluice.responses",
        min_deadline_ms=100,
        max_deadline_ms=1000,
        dedupe_window_s=60,
    )
    raw = b'{"correlation_id": "corr-1", "tenant": "acme", "messages": "no"}'
    decision = validate_record(RawRecord(raw, "sluice.requests", 0, 3), limits, {}, NOW)
    assert isinstance(decision, Decided)
    outcome = decision.outcome
    assert outcome.response is not None and outcome.forward is None
    assert outcome.event.summary is not None
    assert outcome.event.summary.status is Status.REJECTED


@pytest.mark.parametrize(
    ("stage", "run"),
    [
        (Stage.SANITIZE, lambda env: sanitize(env, NOW)),
        (Stage.ROUTE, lambda env: route(env, BUILTIN_CATALOG, NOW)),
        (Stage.VALIDATE_RESPONSE, review),
    ],
)
def test_event_id_is_deterministic_per_request_and_stage(
    stage: Stage, run: Callable[[Envelope], Outcome]
) -> None:
    envelope = answered("hello")
    first, second = run(envelope), run(envelope)
    assert first.event.event_id == second.event.event_id == event_id_for("req-1", stage)
    other = run(answered("hello").model_copy(update={"request_id": "req-2"}))
    assert other.event.event_id != first.event.event_id
    assert len({event_id_for("req-1", s) for s in Stage}) == len(Stage)


def test_forwarding_stages_keep_identity() -> None:
    envelope = make_envelope()
    for outcome in (sanitize(envelope, NOW), route(envelope, BUILTIN_CATALOG, NOW)):
        forwarded = outcome.forward
        assert forwarded is not None
        assert (forwarded.request_id, forwarded.correlation_id, forwarded.tenant, forwarded.reply_to) == (
            "req-1",
            "corr-1",
            "acme",
            REPLY_TO,
        )
        assert (outcome.event.request_id, outcome.event.correlation_id, outcome.event.tenant) == (
            "req-1",
            "corr-1",
            "acme",
        )
