"""What the sink reads off Kafka: the check of each record against its schema, and the rows
built from records for the typed inserts.

The event check is the sink's hottest Python code (every event record goes through it on the
consuming thread while the engine inserts the previous batch on the other core). It validates
each record against the Event schema in strict mode with a validator derived from the schema's
own (`_fields_only`): the same fields, types and rules, but it returns the values as dicts
instead of building Event and RequestSummary objects, which nothing on that path reads. A record
strict mode refuses goes through the full lax check, which tells a converted value from a
malformed record.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_core import CoreSchema, SchemaValidator

from schemas import DeadLetter, Event, Feedback

REASON_MAX = 1000

EVENT_COLUMNS = (
    "event_id", "request_id", "correlation_id", "tenant", "stage", "status", "ts", "duration_ms", "model",
    "prompt_tokens", "completion_tokens", "cost_usd", "cached", "error_code", "flags", "attributes",
    "cache_savings_usd", "routing_savings_usd",
)  # fmt: skip
REQUEST_COLUMNS = (
    "request_id", "correlation_id", "tenant", "received_at", "finished_at", "status", "model",
    "prompt_tokens", "completion_tokens", "cost_usd", "cached", "latency_ms", "groundedness",
    "hallucination", "schema_valid", "error_code", "flags", "stage", "event_id",
    "cache_savings_usd", "routing_savings_usd", "route", "arm", "max_tokens", "question_hash", "answer_hash",
)  # fmt: skip
FEEDBACK_COLUMNS = ("feedback_id", "request_id", "tenant", "rating", "label", "comment", "ts")
DEADLETTER_COLUMNS = ("reason", "source_topic", "partition", "offset", "stage", "ts", "raw_base64")
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": EVENT_COLUMNS,
    "requests": REQUEST_COLUMNS,
    "feedback": FEEDBACK_COLUMNS,
    "deadletters": DEADLETTER_COLUMNS,
}

Row = tuple[Any, ...]
ParsedT = TypeVar("ParsedT", Event, Feedback, DeadLetter)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def _utc(value: datetime) -> datetime:
    """Naive datetimes on the wire are taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ms(value: datetime) -> int:
    """Milliseconds since the epoch (UTC; naive = UTC): what a DateTime64(3) column stores.
    The client sends integers as they are, a datetime costs it a conversion per value."""
    return (_utc(value) - EPOCH) // MILLISECOND


def _clamp(value: int, low: int, high: int) -> int:
    """Out-of-range integers would fail the insert forever (a poison batch); clamp them instead."""
    return max(low, min(value, high))


UINT32_MAX = 2**32 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def record_time(timestamp_ms: int | None) -> datetime:
    if timestamp_ms is None or timestamp_ms < 0:
        return datetime.now(UTC)
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)


def event_row(event: Event) -> Row:
    """Column values in EVENT_COLUMNS order; None becomes '' (ClickHouse idiom, no Nullable)."""
    error_code = event.error_code.value if event.error_code else ""
    return (
        event.event_id, event.request_id, event.correlation_id, event.tenant, event.stage.value,
        event.status, _ms(event.ts), event.duration_ms, event.model or "",
        _clamp(event.prompt_tokens, 0, UINT32_MAX), _clamp(event.completion_tokens, 0, UINT32_MAX),
        event.cost_usd, event.cached, error_code, list(event.flags), dict(event.attributes),
        event.cache_savings_usd, event.routing_savings_usd,
    )  # fmt: skip


def request_row(event: Event) -> Row | None:
    """The `requests` row of the event that ended a request (None for intermediate events).
    The ending event carries the request's totals (model, tokens, cost, error)."""
    summary = event.summary
    if summary is None:
        return None
    error_code = event.error_code.value if event.error_code else ""
    return (
        event.request_id, event.correlation_id, event.tenant, _ms(summary.received_at),
        _ms(summary.finished_at), summary.status.value, event.model or "",
        _clamp(event.prompt_tokens, 0, UINT32_MAX), _clamp(event.completion_tokens, 0, UINT32_MAX),
        event.cost_usd, event.cached, summary.latency_ms, summary.groundedness, summary.hallucination,
        summary.schema_valid, error_code, list(event.flags), event.stage.value, event.event_id,
        event.cache_savings_usd, event.routing_savings_usd, summary.route, summary.arm,
        _attribute_int(event, "max_tokens"), event.attributes.get("question_hash", ""),
        event.attributes.get("answer_hash", ""),
    )  # fmt: skip


def _attribute_int(event: Event, name: str) -> int:
    """A non-negative integer attribute (0 when absent or not a number: analytics, not a reason
    to dead-letter the event)."""
    value = event.attributes.get(name, "")
    return _clamp(int(value), 0, UINT32_MAX) if value.isdigit() else 0


def feedback_row(feedback: Feedback, partition: int, offset: int, ts: datetime) -> Row:
    """feedback_id is the record's position, so a redelivered record replaces its row."""
    return (
        f"{partition}:{offset}", feedback.request_id, feedback.tenant, feedback.rating, feedback.label,
        feedback.comment or "", _ms(ts),
    )  # fmt: skip


def deadletter_row(letter: DeadLetter) -> Row:
    return (
        letter.reason, letter.source_topic, _clamp(letter.partition, INT32_MIN, INT32_MAX),
        _clamp(letter.offset, INT64_MIN, INT64_MAX), letter.stage, _ms(letter.ts), letter.raw_base64,
    )  # fmt: skip


def columns_of(rows: list[Row]) -> list[list[Any]]:
    """Row tuples -> one list per column, the shape of a column-oriented insert."""
    return [list(column) for column in zip(*rows, strict=True)]


def parse(model: type[ParsedT], raw: bytes | None) -> tuple[ParsedT | None, str]:
    """The record as `model`, or None and a short reason (kept for the dead letter)."""
    kind = model.__name__
    if raw is None:
        return None, f"unparseable {kind}: empty record value"
    try:
        return model.model_validate_json(raw), ""
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "value"
        reason = f"unparseable {kind}: {exc.error_count()} error(s), first at {where}: {first.get('msg', '')}"
        return None, reason[:REASON_MAX]


# Schema nodes the derived validator may contain: plain value types and containers. Anything
# else (validators written in Python, references between definitions) means the model is no
# longer a plain record, and the check falls back to the model's own validator.
_PLAIN = {
    "model", "model-fields", "model-field", "str", "int", "float", "bool", "datetime", "enum", "nullable",
    "default", "list", "dict", "any", "none",
}  # fmt: skip


def _fields_only(schema: Any) -> Any:
    """`schema` with every model node replaced by its fields node (same fields, same rule on
    unknown fields): validating then yields (dict, extra, fields set) instead of an instance.
    Raises ValueError on a node it does not know (the caller then keeps the model's validator)."""
    if isinstance(schema, list):
        return [_fields_only(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind is not None and kind not in _PLAIN:
        raise ValueError(f"schema node {kind!r}")
    if kind == "model":
        if schema.get("custom_init") or schema.get("post_init") or schema.get("root_model"):
            raise ValueError("model with its own init")
        inner = dict(schema["schema"])
        inner["extra_behavior"] = schema.get("config", {}).get("extra_fields_behavior", "ignore")
        return _fields_only(inner)
    return {key: _fields_only(value) for key, value in schema.items()}


def _strict_event_validator() -> SchemaValidator:
    try:
        schema: CoreSchema = _fields_only(Event.__pydantic_core_schema__)
    except ValueError:
        return Event.__pydantic_validator__  # type: ignore[return-value]
    return SchemaValidator(schema)


_STRICT_EVENT = _strict_event_validator()
STRICT, CONVERTED, MALFORMED = 0, 1, 2  # verdicts of check_event


def check_event(raw: bytes | None) -> tuple[int, bool, str]:
    """The verdict on one event record: STRICT (the schema takes it in strict mode, every value
    of its own JSON type: the engine reads it the same way), CONVERTED (taken only by converting
    a value: it is inserted typed) or MALFORMED; whether it ends a request (carries a summary);
    and the reason when malformed. Strict first: it is the common case and the cheaper one."""
    if raw is not None:
        try:
            fields = _STRICT_EVENT.validate_json(raw, strict=True)
        except ValidationError:
            pass  # converted values or malformed: the lax check below tells which
        else:
            found = fields[0] if isinstance(fields, tuple) else fields.__dict__
            return STRICT, found["summary"] is not None, ""
    event, reason = parse(Event, raw)
    if event is None:
        return MALFORMED, False, reason
    return CONVERTED, event.summary is not None, ""
