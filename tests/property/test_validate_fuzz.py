"""Fuzzing the only stage that reads outside bytes, and the codec every typed topic uses.

validate_record must never raise, and must always end in exactly one documented outcome:
a dead letter, a forward (event status ok), or a rejection (invalid_request / payload_too_large).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from faust.types.tuples import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.validate import DeadLettered, Decided, Limits, RawRecord, dedupe_key, validate_record
from schemas import Envelope, ErrorCode, Stage, Status
from sluice.codec import Poison, WireSchema, encode
from sluice.outcome import request_id_for

TOPIC = "sluice.requests"
DEFAULT_REPLY = "sluice.responses"
SECRET = "sk-fuzz-SECRET-0c9b8a7f"
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
LIMITS = Limits(
    max_request_bytes=4096,
    default_reply_to=DEFAULT_REPLY,
    reply_prefix=DEFAULT_REPLY,
    min_deadline_ms=100,
    max_deadline_ms=600_000,
    dedupe_window_s=3600.0,
)
REJECTION_CODES = {ErrorCode.INVALID_REQUEST, ErrorCode.PAYLOAD_TOO_LARGE}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ----------------------------------------------------------------------------------

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
huge_strings = st.integers(min_value=1, max_value=LIMITS.max_request_bytes * 3).map(lambda n: "x" * n)
json_values = st.recursive(
    scalars | huge_strings,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=15,
)


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


# As Python values nesting stays encodable (orjson refuses > 255 levels); deeper documents are
# built as bytes in test_deeply_nested_documents.
deep_values = st.builds(nested, st.integers(min_value=1, max_value=200), scalars)
valid_correlation_ids = st.text(min_size=1, max_size=128)
tenants = st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=50)}
    ),
    min_size=1,
    max_size=3,
)


well_typed = st.fixed_dictionaries(
    {"correlation_id": valid_correlation_ids, "tenant": tenants, "messages": messages},
    optional={
        "api_key": st.just(SECRET),
        "reply_to": st.sampled_from([DEFAULT_REPLY, DEFAULT_REPLY + ".me", "other.topic", ""]),
        "model": st.sampled_from(["auto", "sim-small", "nope"]),
        "max_tokens": st.integers(min_value=-5, max_value=10_000),
        "temperature": st.floats(min_value=-1, max_value=3, allow_nan=False),
        "context": st.lists(st.fixed_dictionaries({"id": st.text(max_size=5), "text": st.text(max_size=20)})),
        "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "xml"])}),
        "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
        "deadline_ms": st.integers(min_value=-10, max_value=10**7),
    },
)
FIELDS = [
    "tenant",
    "messages",
    "api_key",
    "reply_to",
    "model",
    "max_tokens",
    "temperature",
    "context",
    "response_format",
    "metadata",
    "deadline_ms",
    "surprise",
]


def replaced(document: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    return {**document, field: value}


def dropped(document: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != field}


# Well-typed documents (some valid, some out of bounds), and ones with one field made anything at
# all (wrong type, deep nesting, huge value, unknown field) or removed.
request_like = st.one_of(
    well_typed,
    st.builds(replaced, well_typed, st.sampled_from(FIELDS), json_values | deep_values | huge_strings),
    st.builds(dropped, well_typed, st.sampled_from(FIELDS)),
)


def dumps(value: Any) -> bytes:
    """JSON bytes; the stdlib also writes ints orjson refuses (> 64 bit), which must be survived too."""
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value).encode()


timestamps = st.none() | st.integers(min_value=-(10**6), max_value=int(NOW.timestamp() * 1000) + 10**9)
offsets = st.integers(min_value=0, max_value=2**40)
partitions = st.integers(min_value=0, max_value=63)


# --- the documented outcomes ---------------------------------------------------------------------


def check(result: DeadLettered | Decided, record: RawRecord, *, expect_duplicate: bool = False) -> None:
    assert isinstance(result, DeadLettered | Decided), type(result)
    if isinstance(result, DeadLettered):
        letter = result.letter
        assert letter.reason
        assert base64.b64decode(letter.raw_base64) == (record.value or b"")
        assert (letter.source_topic, letter.partition, letter.offset) == (
            record.topic,
            record.partition,
            record.offset,
        )
        assert letter.stage == Stage.VALIDATE.value
        return
    outcome = result.outcome
    assert result.request_id == request_id_for(
        record.topic, record.partition, record.offset, record.timestamp_ms, tenant=outcome.event.tenant
    )
    assert outcome.event.request_id == result.request_id
    assert outcome.event.stage is Stage.VALIDATE
    if result.duplicate:
        assert expect_duplicate
        assert outcome.forward is None and outcome.response is None
        assert outcome.event.status == "duplicate"
        return
    assert (outcome.forward is None) != (outcome.response is None), "exactly one of forward / response"
    if outcome.forward is not None:
        assert outcome.event.status == Status.OK.value
        assert outcome.event.summary is None
        assert outcome.forward.request.api_key is None
        assert outcome.forward.reply_to.startswith(LIMITS.reply_prefix)
        assert SECRET.encode() not in encode(outcome.forward)
        assert LIMITS.min_deadline_ms <= outcome.forward.request.deadline_ms <= LIMITS.max_deadline_ms
        assert len(record.value or b"") <= LIMITS.max_request_bytes
    else:
        response = outcome.response
        assert response is not None
        assert response.status is Status.REJECTED
        assert response.error is not None
        assert response.error.code in REJECTION_CODES
        assert response.error.stage is Stage.VALIDATE
        assert SECRET not in response.error.message
        assert outcome.reply_to is not None and outcome.reply_to.startswith(LIMITS.reply_prefix)
        assert outcome.event.status == Status.REJECTED.value
        assert outcome.event.summary is not None
    # every decided outcome can go on the wire
    encode(outcome.event)


def run(value: bytes | None, offset: int = 0, partition: int = 0, timestamp_ms: int | None = None) -> None:
    record = RawRecord(
        value=value, topic=TOPIC, partition=partition, offset=offset, timestamp_ms=timestamp_ms
    )
    check(validate_record(record, LIMITS, {}, NOW), record)


# --- validate_record -----------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=LIMITS.max_request_bytes * 2) | st.none(), offsets, partitions)
def test_arbitrary_bytes(raw: bytes | None, offset: int, partition: int) -> None:
    run(raw, offset, partition)


@FUZZ
@given(json_values | deep_values)
def test_arbitrary_json_values(value: Any) -> None:
    run(dumps(value))


@FUZZ
@given(st.integers(min_value=1, max_value=5000))
def test_deeply_nested_documents(depth: int) -> None:
    run(b"[" * depth + b"]" * depth)
    run(
        b'{"correlation_id": "c", "tenant": "t", "metadata": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    )


@FUZZ
@given(request_like, timestamps, offsets)
def test_documents_around_a_valid_correlation_id(
    document: dict[str, Any], timestamp_ms: int | None, offset: int
) -> None:
    run(dumps(document), offset=offset, timestamp_ms=timestamp_ms)


@FUZZ
@given(
    valid_correlation_ids,
    tenants,
    st.binary(min_size=1, max_size=40),
    st.integers(min_value=0, max_value=200),
)
def test_invalid_utf8_inside_an_otherwise_valid_request(
    correlation_id: str, tenant: str, junk: bytes, where: int
) -> None:
    raw = orjson.dumps(
        {"correlation_id": correlation_id, "tenant": tenant, "messages": [{"role": "user", "content": "hi"}]}
    )
    position = min(where, len(raw))
    run(raw[:position] + b"\xff\xc3" + junk + raw[position:])
    run(raw.replace(b'"hi"', b'"h\xff\xfei"'))


@FUZZ
@given(request_like, st.floats(min_value=0, max_value=2 * LIMITS.dedupe_window_s), offsets, st.booleans())
def test_with_a_remembered_request(
    document: dict[str, Any], age_s: float, offset: int, same_record: bool
) -> None:
    record = RawRecord(value=dumps(document), topic=TOPIC, partition=1, offset=offset)
    earlier_offset = offset if same_record else offset + 1
    tenant = document.get("tenant")
    readable = tenant[:64] if isinstance(tenant, str) else ""
    key = dedupe_key(readable, document["correlation_id"])
    seen = {
        key: {
            "request_id": request_id_for(TOPIC, 1, earlier_offset, tenant=readable),
            "at": NOW.timestamp() - age_s,
            "p": 1,
        }
    }
    result = validate_record(record, LIMITS, seen, NOW)
    expect_duplicate = not same_record and age_s < LIMITS.dedupe_window_s
    check(result, record, expect_duplicate=expect_duplicate)
    assert isinstance(result, Decided) and result.duplicate is expect_duplicate


def test_a_valid_request_is_forwarded_so_the_properties_are_not_vacuous() -> None:
    raw = orjson.dumps(
        {"correlation_id": "c", "tenant": "t", "messages": [{"role": "user", "content": "hi"}]}
    )
    result = validate_record(RawRecord(raw, TOPIC, 0, 0), LIMITS, {}, NOW)
    assert isinstance(result, Decided) and result.outcome.forward is not None


# --- WireSchema(Envelope).loads_value ------------------------------------------------------------

ENVELOPE_SCHEMA: WireSchema[Envelope] = WireSchema(Envelope)
VALID_ENVELOPE = Envelope(
    request_id="r",
    correlation_id="c",
    tenant="t",
    reply_to=DEFAULT_REPLY,
    received_at=NOW,
    deadline_at=NOW + timedelta(seconds=1),
    request={"correlation_id": "c", "tenant": "t", "messages": [{"role": "user", "content": "hi"}]},  # type: ignore[arg-type]
)


def message(value: bytes | None) -> Message:
    return Message(
        topic="sluice.validated",
        partition=0,
        offset=0,
        timestamp=0.0,
        timestamp_type=0,
        headers=None,
        key=b"c",
        value=value,
        checksum=None,
    )


def loads(value: bytes | None) -> Envelope | Poison:
    decoded = ENVELOPE_SCHEMA.loads_value(None, message(value))  # type: ignore[arg-type]
    assert isinstance(decoded, Envelope | Poison), type(decoded)
    if isinstance(decoded, Poison):
        assert decoded.raw == (value or b"")
        assert decoded.reason
    return decoded


@FUZZ
@given(st.binary(max_size=2048) | st.none())
def test_loads_value_random_bytes(raw: bytes | None) -> None:
    loads(raw)


@FUZZ
@given(json_values | deep_values)
def test_loads_value_random_json(value: Any) -> None:
    loads(dumps(value))


@FUZZ
@given(st.sampled_from(sorted(VALID_ENVELOPE.model_dump(mode="json"))), json_values)
def test_loads_value_envelope_with_one_field_replaced(field: str, value: Any) -> None:
    document = VALID_ENVELOPE.model_dump(mode="json")
    document[field] = value
    loads(dumps(document))


@FUZZ
@given(st.integers(min_value=0, max_value=len(encode(VALID_ENVELOPE))), st.binary(max_size=8))
def test_loads_value_truncated_or_corrupted_envelope(cut: int, junk: bytes) -> None:
    raw = encode(VALID_ENVELOPE)
    loads(raw[:cut] + junk)


def test_loads_value_reads_a_valid_envelope_back() -> None:
    assert loads(encode(VALID_ENVELOPE)) == VALID_ENVELOPE
    poison = loads(b"{}")
    assert isinstance(poison, Poison) and "Envelope" in poison.reason
