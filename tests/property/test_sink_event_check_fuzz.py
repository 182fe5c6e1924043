"""The sink's check of event records (outside input): whatever a producer writes into a record,
the check either dead-letters it with a reason, or accepts it; a record accepted in strict mode
(sent to the engine's JSON parser) means exactly what the lax schema reads, so moving the type
checks out of the engine (migration 0011) lost no record and changed no value."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Event
from sluice.warehouse.records import CONVERTED, MALFORMED, STRICT, check_event

BASE: dict[str, Any] = {
    "event_id": "r1/validate_response",
    "request_id": "r1",
    "correlation_id": "c1",
    "tenant": "acme",
    "stage": "validate_response",
    "status": "ok",
    "ts": "2026-12-03T10:00:00.123Z",
    "summary": {
        "received_at": "2026-12-03T10:00:00.000Z",
        "finished_at": "2026-12-03T10:00:00.123Z",
        "status": "ok",
        "latency_ms": 123.0,
    },
}

# JSON values of every type, including the text and number forms lax mode converts.
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["1.5", "0", "1", "true", "false", "yes", "1700000000", "2026-12-03", "", "x"]),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
)
TOP_FIELDS = st.sampled_from(
    ["ts", "duration_ms", "prompt_tokens", "cost_usd", "cached", "model", "error_code", "flags", "attributes"]
)
SUMMARY_FIELDS = st.sampled_from(
    [
        "received_at",
        "finished_at",
        "status",
        "latency_ms",
        "groundedness",
        "hallucination",
        "schema_valid",
        "route",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    top=st.dictionaries(TOP_FIELDS, VALUES, max_size=3),
    summary=st.dictionaries(SUMMARY_FIELDS, VALUES, max_size=3),
)
def test_strict_acceptance_means_what_the_schema_reads(top: dict[str, Any], summary: dict[str, Any]) -> None:
    record = {**BASE, **top, "summary": {**BASE["summary"], **summary}}
    raw = json.dumps(record).encode()
    verdict, ends_request, reason = check_event(raw)
    try:
        lax: Event | None = Event.model_validate_json(raw)
    except ValueError:
        lax = None
    if lax is None:
        assert verdict == MALFORMED and not ends_request and reason.startswith("unparseable Event")
        return
    assert verdict in (STRICT, CONVERTED) and not reason
    assert ends_request == (lax.summary is not None)
    try:  # the check's derived validator accepts in strict mode exactly what the model does
        model_strict = Event.model_validate_json(raw, strict=True) == lax
    except ValueError:
        model_strict = False
    assert (verdict == STRICT) == model_strict
    strict = verdict == STRICT
    if strict:  # what goes to the engine: every value already of its own JSON type
        for name, value in record.items():
            if name in ("duration_ms", "cost_usd") and value is not None:
                assert isinstance(value, int | float) and not isinstance(value, bool)
            if name == "cached":
                assert isinstance(value, bool)
        for name in ("latency_ms", "groundedness"):
            value = record["summary"].get(name)
            assert value is None or (isinstance(value, int | float) and not isinstance(value, bool))
        for name in ("hallucination", "schema_valid"):
            value = record["summary"].get(name)
            assert value is None or isinstance(value, bool)
        assert isinstance(record["ts"], str) and isinstance(record["summary"]["received_at"], str)


def test_no_record_is_lost_or_passed_unchecked() -> None:
    assert check_event(None) == (MALFORMED, False, "unparseable Event: empty record value")
    assert check_event(orjson.dumps(BASE)) == (STRICT, True, "")
    assert check_event(orjson.dumps({**BASE, "summary": None})) == (STRICT, False, "")
    converted = {**BASE, "summary": {**BASE["summary"], "latency_ms": "123"}}
    assert check_event(orjson.dumps(converted)) == (CONVERTED, True, "")
    verdict, _, reason = check_event(orjson.dumps({**BASE, "unknown": 1}))
    assert verdict == MALFORMED and "unknown" in reason
    verdict, _, reason = check_event(orjson.dumps({**BASE, "summary": {**BASE["summary"], "extra": 1}}))
    assert verdict == MALFORMED and "summary.extra" in reason
