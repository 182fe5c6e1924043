"""validate: the only stage that reads outside bytes. Parses and checks the request, assigns its
request_id, drops client retries of a request it has already taken, and ends bad requests with
a typed `rejected` response. Bytes it cannot even attribute go to the dead-letter topic."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from schemas import DeadLetter, Envelope, ErrorCode, ErrorInfo, Request, Stage, Status
from sluice.edge.identity import refusal
from sluice.outcome import Identity, Outcome, finish, forward, make_event, request_id_for
from sluice.settings import Settings
from sluice.tenants import DEFAULT_TENANT, TenantConfig, own_reply_topic

STAGE = Stage.VALIDATE
MAX_CORRELATION_ID = 128
MAX_TOPIC_NAME = 249
TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")  # what Kafka accepts in a topic name

TenantLookup = Callable[[str], TenantConfig]


@dataclass(frozen=True)
class RawRecord:
    """One Kafka record as it arrived, before anything trusts it."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int
    default_reply_to: str
    reply_prefix: str
    min_deadline_ms: int
    max_deadline_ms: int
    dedupe_window_s: float
    max_messages: int = 256
    max_tokens: int = 32_768
    max_context_passages: int = 32
    max_context_bytes: int = 48 * 1024
    max_metadata_keys: int = 32
    max_metadata_key_chars: int = 64
    max_metadata_value_chars: int = 512
    request_id_key: bytes = b""  # keys the tenant tag in request_ids (sluice/request_ids.py)

    @classmethod
    def from_settings(cls, settings: Settings, default_reply_to: str) -> Limits:
        return cls(
            max_request_bytes=settings.max_request_bytes,
            default_reply_to=default_reply_to,
            reply_prefix=settings.allowed_reply_prefix,
            min_deadline_ms=settings.min_deadline_ms,
            max_deadline_ms=settings.max_deadline_ms,
            dedupe_window_s=settings.dedupe_window_s,
            max_messages=settings.max_messages,
            max_tokens=settings.max_tokens_limit,
            max_context_passages=settings.max_context_passages,
            max_context_bytes=settings.max_context_bytes,
            max_metadata_keys=settings.max_metadata_keys,
            max_metadata_key_chars=settings.max_metadata_key_chars,
            max_metadata_value_chars=settings.max_metadata_value_chars,
            request_id_key=settings.request_id_tag_key,
        )


@dataclass(frozen=True)
class DeadLettered:
    letter: DeadLetter


@dataclass(frozen=True)
class Decided:
    """The record was attributable: `outcome` says what happens; `dedupe_key` is remembered
    so a client retry of the same (tenant, correlation_id) is not answered twice."""

    outcome: Outcome
    dedupe_key: str
    request_id: str
    duplicate: bool = False


def dedupe_key(tenant: str, correlation_id: str) -> str:
    return f"{tenant}/{correlation_id}"


def _unconfigured(_tenant: str) -> TenantConfig:
    return DEFAULT_TENANT


def validate_record(
    record: RawRecord,
    limits: Limits,
    seen: Mapping[str, Any],
    now: datetime,
    tenants: TenantLookup = _unconfigured,
) -> DeadLettered | Decided:
    """`tenants(tenant_id)` gives a tenant's configuration (access rules: keys, models, sizes)."""
    started = time.perf_counter()
    raw = record.value or b""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _dead_letter(record, f"not JSON: {exc}", now)
    if not isinstance(data, dict):
        return _dead_letter(record, f"JSON {type(data).__name__} where an object was expected", now)
    correlation_id = data.get("correlation_id")
    if not isinstance(correlation_id, str) or not 1 <= len(correlation_id) <= MAX_CORRELATION_ID:
        return _dead_letter(record, "no readable correlation_id (a string of 1-128 chars)", now)

    raw_tenant = data.get("tenant")
    tenant = raw_tenant[:64] if isinstance(raw_tenant, str) else ""
    tenant_config = tenants(tenant)
    raw_key = data.get("api_key")
    key_problem = refusal(tenant_config, tenant, raw_key if isinstance(raw_key, str) else None, now)
    request_id = request_id_for(
        record.topic,
        record.partition,
        record.offset,
        record.timestamp_ms,
        tenant=tenant,
        key=limits.request_id_key,
    )
    who = Identity(request_id, correlation_id, tenant)
    key = dedupe_key(tenant, correlation_id)
    received_at = _received_at(record, now)

    earlier = seen.get(key)
    if (
        isinstance(earlier, dict)
        and earlier.get("request_id") != request_id
        and now.timestamp() - float(earlier.get("at", 0.0)) < limits.dedupe_window_s
    ):
        event = make_event(
            who,
            STAGE,
            "duplicate",
            now=now,
            duration_ms=_elapsed(started),
            attributes={"original_request_id": str(earlier.get("request_id"))},
        )
        return Decided(Outcome(event=event), key, request_id, duplicate=True)

    # Answers go to a named topic only for a sender proven to be its tenant: nobody can make
    # Sluice write into another tenant's reply topic, not even a rejection.
    reply_to = _safe_reply_to(data.get("reply_to"), tenant, tenant_config, limits, key_problem is None)

    def reject(code: ErrorCode, message: str) -> Decided:
        outcome = finish(
            who,
            STAGE,
            Status.REJECTED,
            reply_to=reply_to,
            received_at=received_at,
            now=now,
            duration_ms=_elapsed(started),
            error=ErrorInfo(code=code, message=message, stage=STAGE),
        )
        return Decided(outcome, key, request_id)

    if len(raw) > limits.max_request_bytes:
        return reject(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"request is {len(raw)} bytes; the limit is {limits.max_request_bytes} bytes",
        )
    try:
        request = Request.model_validate(data)
    except ValidationError as exc:
        return reject(ErrorCode.INVALID_REQUEST, describe_validation_error(exc))
    # request.tenant is `tenant`: the schema takes 1-64 characters, so nothing was cut off
    problem = (
        (ErrorCode.UNAUTHORIZED, key_problem)
        if key_problem
        else check_request(request, limits, tenant_config)
    )
    if problem is not None:
        return reject(*problem)

    envelope = Envelope(
        request_id=request_id,
        correlation_id=correlation_id,
        tenant=request.tenant,
        reply_to=reply_to,
        received_at=received_at,
        deadline_at=received_at + timedelta(milliseconds=request.deadline_ms),
        request=request.model_copy(update={"api_key": None}),
    )
    outcome = forward(
        envelope,
        STAGE,
        now=now,
        duration_ms=_elapsed(started),
        attributes={"request_bytes": str(len(raw)), "messages": str(len(request.messages))},
    )
    return Decided(outcome, key, request_id)


def check_request(request: Request, limits: Limits, tenant: TenantConfig) -> tuple[ErrorCode, str] | None:
    """Limits beyond the schema's types: the first one broken, naming its field."""
    invalid = ErrorCode.INVALID_REQUEST
    if request.reply_to is not None:
        problem = reply_to_problem(request.reply_to, request.tenant, tenant, limits)
        if problem is not None:
            return invalid, problem
    if not limits.min_deadline_ms <= request.deadline_ms <= limits.max_deadline_ms:
        return invalid, f"deadline_ms: must be between {limits.min_deadline_ms} and {limits.max_deadline_ms}"
    if len(request.messages) > limits.max_messages:
        return invalid, f"messages: at most {limits.max_messages} messages"
    if not any(message.role == "user" for message in request.messages):
        return invalid, "messages: must include at least one message with role 'user'"
    if not 1 <= request.max_tokens <= limits.max_tokens:
        return invalid, f"max_tokens: must be between 1 and {limits.max_tokens}"
    allowed = tenant.access.allowed_models
    if allowed and request.model not in allowed:
        return invalid, f"model: not allowed for this tenant; allowed: {', '.join(allowed)}"
    prompt_bytes = sum(len(message.content.encode("utf-8", "surrogatepass")) for message in request.messages)
    if tenant.access.max_prompt_bytes is not None and prompt_bytes > tenant.access.max_prompt_bytes:
        return (
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"messages: the prompt is {prompt_bytes} bytes; "
            f"this tenant's limit is {tenant.access.max_prompt_bytes} bytes",
        )
    if len(request.context) > limits.max_context_passages:
        return invalid, f"context: at most {limits.max_context_passages} passages"
    context_bytes = sum(len(passage.text.encode("utf-8", "surrogatepass")) for passage in request.context)
    if context_bytes > limits.max_context_bytes:
        return (
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"context: passages total {context_bytes} bytes; the limit is {limits.max_context_bytes} bytes",
        )
    if len(request.metadata) > limits.max_metadata_keys:
        return invalid, f"metadata: at most {limits.max_metadata_keys} keys"
    if any(len(key) > limits.max_metadata_key_chars for key in request.metadata):
        return invalid, f"metadata: keys must be at most {limits.max_metadata_key_chars} characters"
    if any(len(value) > limits.max_metadata_value_chars for value in request.metadata.values()):
        return invalid, f"metadata: values must be at most {limits.max_metadata_value_chars} characters"
    return None


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """Name the offending fields without echoing their values (they may hold secrets)."""
    parts = []
    for error in exc.errors()[:limit]:
        location = ".".join(str(part) for part in error["loc"]) or "request"
        parts.append(f"{location}: {error['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def reply_to_problem(topic: str, tenant_id: str, tenant: TenantConfig, limits: Limits) -> str | None:
    """None when the tenant may be answered on `topic`: the default reply topic, its own
    `<reply prefix>.<tenant>` and the topics under it, or one listed in its
    `access.reply_topics`. Otherwise why not (an `invalid_request` message naming reply_to)."""
    if topic == limits.default_reply_to:
        return None
    if len(topic) > MAX_TOPIC_NAME or not TOPIC_NAME.fullmatch(topic):
        return "reply_to: a topic name may only contain a-z, A-Z, 0-9, '.', '_' and '-'"
    own = own_reply_topic(limits.reply_prefix, tenant_id)
    if topic == own or topic.startswith(f"{own}.") or topic in tenant.access.reply_topics:
        return None
    listed = " or its access.reply_topics" if tenant.access.reply_topics else ""
    return (
        f"reply_to: tenant {tenant_id!r} may be answered only on {own!r}, topics under {own + '.'!r}{listed}"
    )


def _safe_reply_to(
    value: object, tenant_id: str, tenant: TenantConfig, limits: Limits, authenticated: bool
) -> str:
    """Only ever answer on a topic the (proven) tenant may use, even when rejecting the request
    for its reply_to; anything else is answered on the default reply topic."""
    if (
        authenticated
        and isinstance(value, str)
        and reply_to_problem(value, tenant_id, tenant, limits) is None
    ):
        return value
    return limits.default_reply_to


def _received_at(record: RawRecord, now: datetime) -> datetime:
    if record.timestamp_ms is None or record.timestamp_ms <= 0:
        return now
    try:
        stamped = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return now  # a producer's absurd timestamp must not crash the stage
    return min(stamped, now)


def _dead_letter(record: RawRecord, reason: str, now: datetime) -> DeadLettered:
    return DeadLettered(
        DeadLetter(
            reason=reason,
            raw_base64=base64.b64encode(record.value or b"").decode("ascii"),
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            stage=STAGE.value,
            ts=now,
        )
    )


def _elapsed(started: float) -> float:
    return (time.perf_counter() - started) * 1000
