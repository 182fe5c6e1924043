"""validate_record: the only stage that reads outside bytes."""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from agents.validate import (
    DeadLettered,
    Decided,
    Limits,
    RawRecord,
    dedupe_key,
    validate_record,
)
from schemas import Envelope, ErrorCode, Stage, Status
from sluice.codec import encode
from sluice.outcome import event_id_for, request_id_for
from sluice.settings import Settings
from sluice.tenants import DEFAULT_TENANT, AccessRules, TenantConfig, hash_key

TOPIC = "sluice.requests"
DEFAULT_REPLY = "sluice.responses"
SECRET = "sk-live-VALIDATE-SECRET-9f8e7d"
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture()
def limits(settings: Settings) -> Limits:
    return Limits.from_settings(settings, DEFAULT_REPLY)


def body(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "correlation_id": "corr-1",
        "tenant": "acme",
        "api_key": SECRET,
        "messages": [{"role": "user", "content": "What is Kafka?"}],
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not _DROP}


_DROP = object()


def record(
    value: bytes | None, offset: int = 7, partition: int = 2, timestamp_ms: int | None = None
) -> RawRecord:
    return RawRecord(value=value, topic=TOPIC, partition=partition, offset=offset, timestamp_ms=timestamp_ms)


def run(
    value: bytes | dict[str, Any] | None,
    limits: Limits,
    seen: dict[str, Any] | None = None,
    *,
    offset: int = 7,
    partition: int = 2,
    timestamp_ms: int | None = None,
) -> DeadLettered | Decided:
    raw = orjson.dumps(value) if isinstance(value, dict) else value
    return validate_record(record(raw, offset, partition, timestamp_ms), limits, seen or {}, NOW)


def decided(result: DeadLettered | Decided) -> Decided:
    assert isinstance(result, Decided), result
    return result


def rejected(result: DeadLettered | Decided, code: ErrorCode) -> Decided:
    decision = decided(result)
    outcome = decision.outcome
    assert outcome.forward is None
    assert outcome.response is not None
    assert outcome.response.status is Status.REJECTED
    assert outcome.response.error is not None
    assert outcome.response.error.code is code
    assert outcome.response.error.stage is Stage.VALIDATE
    assert outcome.event.status == "rejected"
    assert outcome.event.error_code is code
    assert outcome.event.summary is not None
    assert outcome.event.summary.status is Status.REJECTED
    # the secret never travels in a rejection
    assert SECRET.encode() not in encode(outcome.response)
    assert SECRET.encode() not in encode(outcome.event)
    return decision


def error_message(decision: Decided) -> str:
    assert decision.outcome.response is not None and decision.outcome.response.error is not None
    return decision.outcome.response.error.message


# --- accepted ------------------------------------------------------------------------------------


def test_valid_request_is_forwarded_as_an_envelope(limits: Limits) -> None:
    decision = decided(run(body(), limits))
    assert decision.duplicate is False
    assert decision.dedupe_key == dedupe_key("acme", "corr-1") == "acme/corr-1"
    outcome = decision.outcome
    assert outcome.response is None
    assert isinstance(outcome.forward, Envelope)
    envelope = outcome.forward
    assert envelope.request_id == decision.request_id == request_id_for(TOPIC, 2, 7, tenant="acme")
    assert envelope.correlation_id == "corr-1"
    assert envelope.tenant == "acme"
    assert envelope.reply_to == DEFAULT_REPLY
    assert envelope.request.messages[0].content == "What is Kafka?"
    assert envelope.received_at == NOW
    assert envelope.deadline_at == NOW + timedelta(milliseconds=30_000)
    event = outcome.event
    assert event.stage is Stage.VALIDATE
    assert event.status == "ok"
    assert event.request_id == envelope.request_id
    assert event.event_id == event_id_for(envelope.request_id, Stage.VALIDATE)
    assert event.summary is None


def test_api_key_is_removed_from_the_envelope(limits: Limits) -> None:
    outcome = decided(run(body(), limits)).outcome
    assert outcome.forward is not None
    assert outcome.forward.request.api_key is None
    assert SECRET.encode() not in encode(outcome.forward)
    assert SECRET.encode() not in encode(outcome.event)


def test_request_id_is_deterministic_per_topic_partition_offset(limits: Limits) -> None:
    first = decided(run(body(), limits, offset=7, partition=2))
    again = decided(run(body(), limits, offset=7, partition=2))
    other_offset = decided(run(body(), limits, offset=8, partition=2))
    other_partition = decided(run(body(), limits, offset=7, partition=3))
    assert first.request_id == again.request_id == request_id_for(TOPIC, 2, 7, tenant="acme")
    assert first.outcome.event.event_id == again.outcome.event.event_id
    assert len({first.request_id, other_offset.request_id, other_partition.request_id}) == 3


def test_received_at_comes_from_the_record_timestamp_but_never_after_now(limits: Limits) -> None:
    earlier = NOW - timedelta(seconds=5)
    decision = decided(run(body(deadline_ms=1000), limits, timestamp_ms=int(earlier.timestamp() * 1000)))
    assert decision.outcome.forward is not None
    assert decision.outcome.forward.received_at == earlier
    assert decision.outcome.forward.deadline_at == earlier + timedelta(seconds=1)
    future = NOW + timedelta(hours=1)
    later = decided(run(body(), limits, timestamp_ms=int(future.timestamp() * 1000)))
    assert later.outcome.forward is not None and later.outcome.forward.received_at == NOW


def test_absurd_record_timestamp_does_not_crash_validate(limits: Limits) -> None:
    result = run(body(), limits, timestamp_ms=10**15)  # a CreateTime any producer may set
    assert isinstance(result, Decided)
    assert result.outcome.forward is not None
    assert result.outcome.forward.received_at <= NOW


def test_full_featured_request_is_accepted(limits: Limits) -> None:
    document = body(
        reply_to="sluice.responses.acme.team-a",
        model="sim-large",
        max_tokens=12,
        temperature=0.1,
        context=[{"id": "doc-1", "text": "Kafka is a log."}],
        response_format={"type": "json_object"},
        metadata={"user": "u1"},
        deadline_ms=5000,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    )
    decision = decided(run(document, limits))
    assert decision.outcome.forward is not None
    envelope = decision.outcome.forward
    assert envelope.reply_to == "sluice.responses.acme.team-a"
    assert envelope.request.model == "sim-large"
    assert envelope.request.context[0].id == "doc-1"
    assert envelope.deadline_at - envelope.received_at == timedelta(seconds=5)


# --- dead letters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        (b"this is not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"", "not JSON"),
        (None, "not JSON"),
        (b"[1, 2, 3]", "list"),
        (b'"corr-1"', "str"),
        (b"42", "int"),
        (b"null", "NoneType"),
        (b'{"tenant": "acme", "messages": []}', "correlation_id"),
        (b'{"correlation_id": 12345, "tenant": "acme"}', "correlation_id"),
        (b'{"correlation_id": ["a"], "tenant": "acme"}', "correlation_id"),
        (b'{"correlation_id": null}', "correlation_id"),
        (b'{"correlation_id": ""}', "correlation_id"),
        (orjson.dumps({"correlation_id": "x" * 129, "tenant": "acme"}), "correlation_id"),
    ],
)
def test_unattributable_records_are_dead_lettered(
    raw: bytes | None, reason_part: str, limits: Limits
) -> None:
    result = run(raw, limits, offset=41, partition=5)
    assert isinstance(result, DeadLettered), result
    letter = result.letter
    assert reason_part in letter.reason
    assert base64.b64decode(letter.raw_base64) == (raw or b"")
    assert (letter.source_topic, letter.partition, letter.offset) == (TOPIC, 5, 41)
    assert letter.stage == "validate"
    assert letter.ts == NOW


def test_correlation_id_of_exactly_128_chars_is_attributable(limits: Limits) -> None:
    decision = decided(run(body(correlation_id="x" * 128), limits))
    assert decision.outcome.forward is not None


# --- rejected: invalid_request -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tenant": _DROP}, "tenant"),
        ({"tenant": "ACME!"}, "tenant"),
        ({"tenant": 7}, "tenant"),
        ({"messages": _DROP}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"max_tokens": "lots"}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 9}, "temperature"),
        ({"model": 3}, "model"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"context": [{"id": "", "text": "x"}]}, "context.0.id"),
        ({"colour": "blue"}, "colour"),
        ({"api_key": ["not", "a", "string"]}, "api_key"),
        ({"deadline_ms": "soon"}, "deadline_ms"),
    ],
)
def test_invalid_requests_are_rejected_naming_the_field(
    changes: dict[str, Any], field: str, limits: Limits
) -> None:
    decision = rejected(run(body(**changes), limits), ErrorCode.INVALID_REQUEST)
    message = error_message(decision)
    assert message.startswith(field) or f"; {field}" in message, message
    assert SECRET not in message
    assert decision.outcome.reply_to == DEFAULT_REPLY
    response = decision.outcome.response
    assert response is not None
    assert response.correlation_id == "corr-1"
    expected = request_id_for(TOPIC, 2, 7, tenant=response.tenant)  # the tenant it could read
    assert response.request_id == decision.request_id == expected


def test_rejection_never_echoes_the_api_key_even_when_it_is_the_bad_value(limits: Limits) -> None:
    decision = rejected(
        run(body(api_key={"value": SECRET}, tenant="Bad Tenant"), limits), ErrorCode.INVALID_REQUEST
    )
    message = error_message(decision)
    assert "api_key" in message and "tenant" in message
    assert SECRET not in message
    assert "Bad Tenant" not in message  # values are never echoed, only field names


def test_many_errors_are_summarised(limits: Limits) -> None:
    document = body(a=1, b=2, c=3, d=4, e=5)
    message = error_message(rejected(run(document, limits), ErrorCode.INVALID_REQUEST))
    assert "and 2 more" in message


def test_rejection_keeps_the_tenant_it_could_read(limits: Limits) -> None:
    decision = rejected(run(body(max_tokens=-1), limits), ErrorCode.INVALID_REQUEST)
    assert decision.outcome.response is not None
    assert decision.outcome.response.tenant == "acme"
    assert decision.outcome.event.tenant == "acme"


# --- size ----------------------------------------------------------------------------------------


def test_oversize_request_is_payload_too_large(limits: Limits) -> None:
    raw = orjson.dumps(body(messages=[{"role": "user", "content": "x" * limits.max_request_bytes}]))
    assert len(raw) > limits.max_request_bytes
    decision = rejected(run(raw, limits), ErrorCode.PAYLOAD_TOO_LARGE)
    assert str(limits.max_request_bytes) in error_message(decision)


def test_request_of_exactly_the_limit_is_accepted(limits: Limits) -> None:
    raw = orjson.dumps(body())
    exact = dataclasses.replace(limits, max_request_bytes=len(raw))
    assert decided(run(raw, exact)).outcome.forward is not None
    one_less = dataclasses.replace(limits, max_request_bytes=len(raw) - 1)
    rejected(run(raw, one_less), ErrorCode.PAYLOAD_TOO_LARGE)


# --- reply_to ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply_to", ["evil.topic", "responses", "sluice.request", "", 12])
def test_reply_to_outside_the_allowed_prefix_is_rejected_on_the_default_topic(
    reply_to: object, limits: Limits
) -> None:
    decision = rejected(run(body(reply_to=reply_to), limits), ErrorCode.INVALID_REQUEST)
    assert "reply_to" in error_message(decision)
    assert decision.outcome.reply_to == DEFAULT_REPLY


def test_reply_to_prefix_comes_from_settings(settings: Settings) -> None:
    limits = Limits.from_settings(settings.with_overrides(reply_prefix="team-a."), DEFAULT_REPLY)
    accepted = decided(run(body(reply_to="team-a.acme"), limits))
    assert accepted.outcome.forward is not None
    assert accepted.outcome.forward.reply_to == "team-a.acme"
    refused = rejected(run(body(reply_to="sluice.responses.acme"), limits), ErrorCode.INVALID_REQUEST)
    assert refused.outcome.reply_to == DEFAULT_REPLY


def test_rejection_for_another_reason_goes_to_an_allowed_reply_to(limits: Limits) -> None:
    decision = rejected(
        run(body(reply_to="sluice.responses.acme.mine", max_tokens=0), limits), ErrorCode.INVALID_REQUEST
    )
    assert decision.outcome.reply_to == "sluice.responses.acme.mine"


@pytest.mark.parametrize(
    "reply_to",
    ["sluice.responses", "sluice.responses.acme", "sluice.responses.acme.worker-7", "acme-legacy.answers"],
)
def test_a_tenant_may_name_its_own_reply_topics(reply_to: str, limits: Limits) -> None:
    """The default topic, `<reply prefix>.<tenant>`, topics under it, and its listed ones."""
    listed = {"acme": TenantConfig(access=AccessRules(reply_topics=("acme-legacy.answers",)))}
    decision = decided(
        validate_record(
            record(orjson.dumps(body(reply_to=reply_to))),
            limits,
            {},
            NOW,
            lambda t: listed.get(t, DEFAULT_TENANT),
        )
    )
    assert decision.outcome.forward is not None and decision.outcome.forward.reply_to == reply_to


@pytest.mark.parametrize(
    "reply_to",
    [
        "sluice.responses.globex",  # another tenant's
        "sluice.responses.globex.acme",
        "sluice.responses.acme-eu",  # a tenant whose id starts with this one's
        "sluice.responses.acmex",
        "sluice.responsesacme",
        "acme-legacy.answers",  # listed for another tenant only
    ],
)
def test_another_tenants_reply_topic_is_refused_and_never_written(reply_to: str, limits: Limits) -> None:
    listed = {"globex": TenantConfig(access=AccessRules(reply_topics=("acme-legacy.answers",)))}
    result = validate_record(
        record(orjson.dumps(body(reply_to=reply_to))),
        limits,
        {},
        NOW,
        lambda t: listed.get(t, DEFAULT_TENANT),
    )
    decision = rejected(result, ErrorCode.INVALID_REQUEST)
    message = error_message(decision)
    assert message.startswith("reply_to: tenant 'acme' may be answered only on 'sluice.responses.acme'")
    assert decision.outcome.reply_to == DEFAULT_REPLY


def test_an_unauthenticated_sender_is_never_answered_on_a_tenants_topic(limits: Limits) -> None:
    """Whoever fails acme's key check cannot make Sluice write, even a rejection, to acme's topic."""
    for document in (
        body(api_key="sk-wrong", reply_to="sluice.responses.acme"),
        body(api_key="sk-wrong", reply_to="sluice.responses.acme", max_tokens=0),
        body(api_key="sk-wrong", reply_to="sluice.responses.acme", messages="not a list"),
    ):
        decision = decided(run_as(document, limits))
        assert decision.outcome.response is not None
        assert decision.outcome.reply_to == DEFAULT_REPLY
    # with the right key, a rejection for another reason does go to the tenant's own topic
    own = decided(run_as(body(reply_to="sluice.responses.acme", max_tokens=0), limits))
    assert own.outcome.reply_to == "sluice.responses.acme"


def test_listed_reply_topics_must_be_topic_names() -> None:
    with pytest.raises(ValueError, match="not a Kafka topic name"):
        AccessRules(reply_topics=("answers for acme",))


# --- deadline ------------------------------------------------------------------------------------


@pytest.mark.parametrize("deadline_ms", [1, 99, 600_001, 10**9])
def test_deadline_out_of_bounds_is_rejected(deadline_ms: int, limits: Limits) -> None:
    assert (limits.min_deadline_ms, limits.max_deadline_ms) == (100, 600_000)
    decision = rejected(run(body(deadline_ms=deadline_ms), limits), ErrorCode.INVALID_REQUEST)
    assert "deadline_ms" in error_message(decision)


@pytest.mark.parametrize("deadline_ms", [100, 600_000])
def test_deadline_bounds_are_inclusive(deadline_ms: int, limits: Limits) -> None:
    decision = decided(run(body(deadline_ms=deadline_ms), limits))
    assert decision.outcome.forward is not None
    envelope = decision.outcome.forward
    assert envelope.deadline_at - envelope.received_at == timedelta(milliseconds=deadline_ms)


# --- duplicates ----------------------------------------------------------------------------------


def _seen_entry(request_id: str, age_s: float) -> dict[str, Any]:
    return {"request_id": request_id, "at": NOW.timestamp() - age_s, "p": 2}


def test_retry_with_the_same_tenant_and_correlation_id_is_a_duplicate(limits: Limits) -> None:
    first = decided(run(body(), limits, offset=7))
    seen = {first.dedupe_key: _seen_entry(first.request_id, age_s=30)}
    retry = decided(run(body(), limits, seen, offset=19))
    assert retry.duplicate is True
    assert retry.request_id == request_id_for(TOPIC, 2, 19, tenant="acme") != first.request_id
    assert retry.outcome.forward is None
    assert retry.outcome.response is None
    assert retry.outcome.event.status == "duplicate"
    assert retry.outcome.event.stage is Stage.VALIDATE
    assert retry.outcome.event.attributes["original_request_id"] == first.request_id
    assert retry.outcome.event.summary is None


def test_duplicate_is_detected_even_when_the_retry_is_invalid(limits: Limits) -> None:
    first = decided(run(body(), limits, offset=7))
    seen = {first.dedupe_key: _seen_entry(first.request_id, age_s=1)}
    retry = decided(run(body(max_tokens="x"), limits, seen, offset=8))
    assert retry.duplicate is True
    assert retry.outcome.response is None


def test_redelivery_of_the_same_record_is_not_a_duplicate(limits: Limits) -> None:
    first = decided(run(body(), limits, offset=7))
    seen = {first.dedupe_key: _seen_entry(first.request_id, age_s=30)}
    again = decided(run(body(), limits, seen, offset=7))
    assert again.duplicate is False
    assert again.request_id == first.request_id
    assert again.outcome.forward is not None


def test_entries_older_than_the_window_are_not_duplicates(limits: Limits) -> None:
    first = decided(run(body(), limits, offset=7))
    seen = {first.dedupe_key: _seen_entry(first.request_id, age_s=limits.dedupe_window_s + 1)}
    later = decided(run(body(), limits, seen, offset=99))
    assert later.duplicate is False
    assert later.outcome.forward is not None


def test_same_correlation_id_for_another_tenant_is_not_a_duplicate(limits: Limits) -> None:
    first = decided(run(body(), limits, offset=7))
    seen = {first.dedupe_key: _seen_entry(first.request_id, age_s=1)}
    other = decided(run(body(tenant="globex"), limits, seen, offset=8))
    assert other.duplicate is False
    assert other.dedupe_key == "globex/corr-1"
    assert other.outcome.forward is not None


# --- complete validation: counts, sizes, ranges --------------------------------------------------


def _messages(count: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"m{i}"} for i in range(count)]


def _context(count: int, size: int = 1) -> list[dict[str, str]]:
    return [{"id": f"doc-{i}", "text": "x" * size} for i in range(count)]


@pytest.fixture()
def roomy(limits: Limits) -> Limits:
    """Limits whose request size never gets in the way of the limit under test."""
    return dataclasses.replace(limits, max_request_bytes=10**7)


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"messages": _messages(257)}, "messages", ErrorCode.INVALID_REQUEST),
        (
            {"messages": [{"role": "system", "content": "only a system prompt"}]},
            "messages",
            ErrorCode.INVALID_REQUEST,
        ),
        (
            {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},
            "messages",
            ErrorCode.INVALID_REQUEST,
        ),
        ({"max_tokens": 32_769}, "max_tokens", ErrorCode.INVALID_REQUEST),
        ({"max_tokens": 10**12}, "max_tokens", ErrorCode.INVALID_REQUEST),
        ({"context": _context(33)}, "context", ErrorCode.INVALID_REQUEST),
        ({"context": _context(2, 24 * 1024 + 1)}, "context", ErrorCode.PAYLOAD_TOO_LARGE),
        ({"metadata": {f"k{i}": "v" for i in range(33)}}, "metadata", ErrorCode.INVALID_REQUEST),
        ({"metadata": {"k" * 65: "v"}}, "metadata", ErrorCode.INVALID_REQUEST),
        ({"metadata": {"k": "v" * 513}}, "metadata", ErrorCode.INVALID_REQUEST),
        ({"reply_to": "sluice.responses.acme/../x"}, "reply_to", ErrorCode.INVALID_REQUEST),
        ({"reply_to": "sluice.responses.acme me"}, "reply_to", ErrorCode.INVALID_REQUEST),
        ({"reply_to": "sluice.responses.acme.é"}, "reply_to", ErrorCode.INVALID_REQUEST),
        ({"reply_to": "sluice.responses.acme\n"}, "reply_to", ErrorCode.INVALID_REQUEST),
    ],
)
def test_limits_beyond_the_types_are_rejected_naming_the_field(
    changes: dict[str, Any], field: str, code: ErrorCode, roomy: Limits
) -> None:
    decision = rejected(run(body(**changes), roomy), code)
    message = error_message(decision)
    assert message.startswith(field), message
    assert SECRET not in message
    assert decision.outcome.reply_to == DEFAULT_REPLY  # a bad reply_to is never answered on


@pytest.mark.parametrize(
    "changes",
    [
        {"messages": _messages(256)},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]},
        {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}]},
        {"max_tokens": 1},
        {"max_tokens": 32_768},
        {"context": _context(32)},
        {"context": _context(2, 24 * 1024)},
        {"metadata": {f"k{i}": "v" * 512 for i in range(32)}},
        {"metadata": {"k" * 64: "v"}},
        {"reply_to": "sluice.responses.acme.Team_A-1.x"},
    ],
)
def test_limits_are_inclusive(changes: dict[str, Any], roomy: Limits) -> None:
    assert decided(run(body(**changes), roomy)).outcome.forward is not None


def test_new_limits_come_from_settings(settings: Settings) -> None:
    tight = settings.with_overrides(
        max_messages=2,
        max_tokens_limit=300,
        max_context_passages=1,
        max_context_bytes=5,
        max_metadata_keys=1,
        max_metadata_key_chars=2,
        max_metadata_value_chars=3,
    )
    limits = Limits.from_settings(tight, DEFAULT_REPLY)
    assert (limits.max_messages, limits.max_tokens, limits.max_context_passages) == (2, 300, 1)
    assert (limits.max_context_bytes, limits.max_metadata_keys) == (5, 1)
    assert (limits.max_metadata_key_chars, limits.max_metadata_value_chars) == (2, 3)
    assert decided(run(body(messages=_messages(2), max_tokens=300), limits)).outcome.forward is not None
    rejected(run(body(messages=_messages(3)), limits), ErrorCode.INVALID_REQUEST)
    rejected(run(body(max_tokens=301), limits), ErrorCode.INVALID_REQUEST)
    rejected(run(body(context=_context(2)), limits), ErrorCode.INVALID_REQUEST)
    rejected(run(body(context=_context(1, 6)), limits), ErrorCode.PAYLOAD_TOO_LARGE)
    rejected(run(body(metadata={"a": "1", "b": "2"}), limits), ErrorCode.INVALID_REQUEST)
    rejected(run(body(metadata={"abc": "1"}), limits), ErrorCode.INVALID_REQUEST)
    rejected(run(body(metadata={"a": "1234"}), limits), ErrorCode.INVALID_REQUEST)


# --- tenant access: keys, models, prompt size ----------------------------------------------------

KEYED = {
    "acme": TenantConfig(access=AccessRules(api_key_sha256=(hash_key(SECRET), hash_key("sk-second")))),
    "modest": TenantConfig(access=AccessRules(allowed_models=("auto", "sim-small"), max_prompt_bytes=10)),
}


def lookup(tenant: str) -> TenantConfig:
    return KEYED.get(tenant, DEFAULT_TENANT)


def run_as(document: dict[str, Any], limits: Limits) -> DeadLettered | Decided:
    return validate_record(record(orjson.dumps(document)), limits, {}, NOW, lookup)


def test_right_key_is_accepted_and_removed(limits: Limits) -> None:
    for key in (SECRET, "sk-second"):
        outcome = decided(run_as(body(api_key=key), limits)).outcome
        assert outcome.forward is not None and outcome.forward.request.api_key is None
        assert key.encode() not in encode(outcome.forward) and key.encode() not in encode(outcome.event)


@pytest.mark.parametrize("api_key", [_DROP, None, "sk-wrong", SECRET + " ", SECRET.upper(), hash_key(SECRET)])
def test_missing_or_wrong_key_is_unauthorized(api_key: object, limits: Limits) -> None:
    decision = rejected(run_as(body(api_key=api_key), limits), ErrorCode.UNAUTHORIZED)
    message = error_message(decision)
    assert message.startswith("api_key")
    if isinstance(api_key, str):
        assert api_key not in message
        assert api_key.encode() not in encode(decision.outcome.response)  # type: ignore[arg-type]
        assert api_key.encode() not in encode(decision.outcome.event)


def test_unauthorized_comes_before_what_the_tenant_allows(limits: Limits) -> None:
    rejected(run_as(body(api_key="sk-wrong", max_tokens=10**6), limits), ErrorCode.UNAUTHORIZED)


def test_unconfigured_tenants_need_no_key(limits: Limits) -> None:
    for tenant in ("demo", "globex"):
        for api_key in (_DROP, "anything"):
            decision = decided(run_as(body(tenant=tenant, api_key=api_key), limits))
            assert decision.outcome.forward is not None
            assert decision.outcome.forward.request.api_key is None


def test_default_lookup_treats_every_tenant_as_unconfigured(limits: Limits) -> None:
    assert decided(run(body(api_key=_DROP), limits)).outcome.forward is not None


def test_settings_tenant_lookup_enforces_keys(settings: Settings, limits: Limits) -> None:
    configured = settings.with_overrides(tenants={"acme": {"access": {"api_key_sha256": [hash_key(SECRET)]}}})
    raw = orjson.dumps(body(api_key="sk-nope"))
    refused = validate_record(record(raw), limits, {}, NOW, configured.tenant)
    rejected(refused, ErrorCode.UNAUTHORIZED)
    allowed = validate_record(record(orjson.dumps(body())), limits, {}, NOW, configured.tenant)
    assert decided(allowed).outcome.forward is not None


@pytest.mark.parametrize(("model", "ok"), [("auto", True), ("sim-small", True), ("sim-large", False)])
def test_model_must_be_allowed_for_the_tenant(model: str, ok: bool, limits: Limits) -> None:
    document = body(tenant="modest", model=model, messages=[{"role": "user", "content": "hi"}])
    if ok:
        assert decided(run_as(document, limits)).outcome.forward is not None
    else:
        message = error_message(rejected(run_as(document, limits), ErrorCode.INVALID_REQUEST))
        assert message.startswith("model")
    # a tenant without a list may use any model
    assert decided(run_as(body(model="sim-large"), limits)).outcome.forward is not None


def test_prompt_size_is_limited_per_tenant(limits: Limits) -> None:
    def prompt(*contents: str) -> dict[str, Any]:
        return body(tenant="modest", messages=[{"role": "user", "content": c} for c in contents])

    assert decided(run_as(prompt("12345", "67890"), limits)).outcome.forward is not None
    assert decided(run_as(prompt("ééééé"), limits)).outcome.forward is not None  # 10 bytes
    message = error_message(rejected(run_as(prompt("12345", "678901"), limits), ErrorCode.PAYLOAD_TOO_LARGE))
    assert message.startswith("messages") and "10 bytes" in message
    rejected(run_as(prompt("éééééé"), limits), ErrorCode.PAYLOAD_TOO_LARGE)  # 6 chars, 12 bytes
    # other tenants have no prompt limit beyond the request's
    assert decided(run_as(body(messages=_messages(1) * 20), limits)).outcome.forward is not None
