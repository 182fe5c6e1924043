"""What a stage decided about one request, as plain data: the event it records, and either the
envelope it forwards or the response that ends the request. Pure: no Kafka, no clock reads
except the `now` callers pass in, so every stage's logic is testable on its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas import (
    Checks,
    Envelope,
    ErrorCode,
    ErrorInfo,
    Event,
    RequestSummary,
    Response,
    Settlement,
    Stage,
    Status,
    ToolCall,
    Usage,
)
from sluice.request_ids import bind_to_tenant

_EVENT_NAMESPACE = uuid.UUID("5b1d7c1e-0f4a-4c39-9a57-2f6f3b0d5e11")
_REQUEST_NAMESPACE = uuid.UUID("0d6f5f0e-7c1b-4b8e-8f7e-1c2d3e4f5a6b")


def request_id_for(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None = None,
    *,
    tenant: str,
    key: bytes = b"",
) -> str:
    """Deterministic per Kafka record: a redelivered record gets the same request_id again,
    so every downstream dedupe keyed by request_id holds even across a worker crash. The
    record's timestamp is part of it because offsets restart when a topic is recreated (the
    embedded broker keeps its log in memory), and ids must stay unique in ClickHouse. The id
    carries a tag of its tenant (sluice/request_ids.py), so its owner is known everywhere."""
    stamp = "" if timestamp_ms is None else f"/{timestamp_ms}"
    base = uuid.uuid5(_REQUEST_NAMESPACE, f"{topic}/{partition}/{offset}{stamp}")
    return bind_to_tenant(base, tenant, key)


def event_id_for(request_id: str, stage: Stage, variant: str = "") -> str:
    """Deterministic per (request, stage): re-emitting an event replaces it in ClickHouse."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{request_id}/{stage.value}/{variant}"))


def utcnow() -> datetime:
    return datetime.now(UTC)


def ms_between(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds() * 1000, 0.0)


@dataclass(frozen=True)
class Outcome:
    """A stage's decision. Exactly one of `forward` / `response` is set, or neither for
    events that only record (duplicates)."""

    event: Event
    forward: Envelope | None = None
    response: Response | None = None
    reply_to: str | None = None


@dataclass(frozen=True)
class Identity:
    """Who a request is, as far as a stage could read it."""

    request_id: str
    correlation_id: str
    tenant: str

    @classmethod
    def of(cls, envelope: Envelope) -> Identity:
        return cls(envelope.request_id, envelope.correlation_id, envelope.tenant)


@dataclass(frozen=True, slots=True)
class Spend:
    """How a request's money was (not) spent: cache hit, savings, and the route that chose."""

    cached: bool = False
    cache_savings_usd: float = 0.0
    routing_savings_usd: float = 0.0
    route: str = ""
    arm: str = ""

    @classmethod
    def of(cls, envelope: Envelope) -> Spend:
        inference, decision = envelope.inference, envelope.route
        return cls(
            cached=inference.cached if inference else False,
            cache_savings_usd=inference.cache_savings_usd if inference else 0.0,
            routing_savings_usd=inference.routing_savings_usd if inference else 0.0,
            route=decision.route if decision else "",
            arm=(decision.arm or "") if decision else "",
        )


def make_event(
    who: Identity,
    stage: Stage,
    status: str,
    *,
    now: datetime,
    duration_ms: float,
    model: str | None = None,
    usage: Usage | None = None,
    cost_usd: float = 0.0,
    error_code: ErrorCode | None = None,
    flags: list[str] | None = None,
    attributes: dict[str, str] | None = None,
    summary: RequestSummary | None = None,
    variant: str = "",
    spend: Spend | None = None,
) -> Event:
    usage = usage or Usage()
    spend = spend or Spend()
    return Event(
        event_id=event_id_for(who.request_id, stage, variant),
        request_id=who.request_id,
        correlation_id=who.correlation_id,
        tenant=who.tenant,
        stage=stage,
        status=status,
        ts=now,
        duration_ms=duration_ms,
        model=model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=cost_usd,
        cached=spend.cached,
        cache_savings_usd=spend.cache_savings_usd,
        routing_savings_usd=spend.routing_savings_usd,
        error_code=error_code,
        flags=list(flags or []),
        attributes=dict(attributes or {}),
        summary=summary,
    )


def forward(
    envelope: Envelope,
    stage: Stage,
    *,
    now: datetime,
    duration_ms: float,
    attributes: dict[str, str] | None = None,
    model: str | None = None,
    usage: Usage | None = None,
    cost_usd: float = 0.0,
    status: str = Status.OK.value,
    error_code: ErrorCode | None = None,
    flags: list[str] | None = None,
) -> Outcome:
    """Pass the request on to the next stage (or back to infer, for a retry)."""
    event = make_event(
        Identity.of(envelope),
        stage,
        status,
        now=now,
        duration_ms=duration_ms,
        model=model,
        usage=usage,
        cost_usd=cost_usd,
        error_code=error_code,
        flags=envelope.flags if flags is None else flags,
        attributes=attributes,
        variant=f"attempt-{envelope.attempt}" if envelope.attempt else "",
    )
    return Outcome(event=event, forward=envelope)


def finish(
    who: Identity,
    stage: Stage,
    status: Status,
    *,
    reply_to: str,
    received_at: datetime,
    now: datetime,
    duration_ms: float,
    error: ErrorInfo | None = None,
    model: str | None = None,
    content: str | None = None,
    usage: Usage | None = None,
    cost_usd: float = 0.0,
    checks: Checks | None = None,
    attributes: dict[str, str] | None = None,
    spend: Spend | None = None,
    variant: str = "",
    tool_calls: list[ToolCall] | None = None,
    finish_reason: str | None = None,
) -> Outcome:
    """End the request: its one response, and the final event that becomes its ClickHouse row.
    `variant` keeps this event apart from an earlier one of the same stage (admission)."""
    usage = usage or Usage()
    spend = spend or Spend()
    checks = checks or Checks()
    latency_ms = ms_between(received_at, now)
    response = Response(
        correlation_id=who.correlation_id,
        request_id=who.request_id,
        tenant=who.tenant,
        status=status,
        model=model,
        content=content,
        tool_calls=tool_calls,
        finish_reason=finish_reason,
        usage=usage,
        cost_usd=cost_usd,
        cached=spend.cached,
        latency_ms=latency_ms,
        checks=checks,
        error=error,
    )
    summary = RequestSummary(
        received_at=received_at,
        finished_at=now,
        status=status,
        latency_ms=latency_ms,
        groundedness=checks.groundedness,
        hallucination=checks.hallucination,
        schema_valid=checks.schema_valid,
        route=spend.route,
        arm=spend.arm,
    )
    event = make_event(
        who,
        stage,
        status.value,
        now=now,
        duration_ms=duration_ms,
        model=model,
        usage=usage,
        cost_usd=cost_usd,
        error_code=error.code if error else None,
        flags=checks.flags,
        attributes=attributes,
        summary=summary,
        spend=spend,
        variant=variant,
    )
    return Outcome(event=event, response=response, reply_to=reply_to)


def fail(
    envelope: Envelope,
    stage: Stage,
    status: Status,
    code: ErrorCode,
    message: str,
    *,
    now: datetime,
    duration_ms: float,
    model: str | None = None,
    attributes: dict[str, str] | None = None,
) -> Outcome:
    """End a request early with a typed error (errors are data, never exceptions on the wire)."""
    return finish(
        Identity.of(envelope),
        stage,
        status,
        reply_to=envelope.reply_to,
        received_at=envelope.received_at,
        now=now,
        duration_ms=duration_ms,
        error=ErrorInfo(code=code, message=message, stage=stage),
        model=model,
        checks=Checks(flags=list(envelope.flags)),
        attributes=attributes,
    )


def settlement_of(outcome: Outcome) -> Settlement | None:
    """The settlement a final outcome owes the admit step (quotas): every admitted request
    settles, i.e. every final response except the validate stage's own refusals."""
    response = outcome.response
    if response is None or (response.error is not None and response.error.stage is Stage.VALIDATE):
        return None
    return Settlement(
        request_id=response.request_id,
        tenant=response.tenant,
        status=response.status,
        cost_usd=max(response.cost_usd, 0.0),
        prompt_tokens=response.usage.prompt_tokens,
        completion_tokens=response.usage.completion_tokens,
        finished_at=outcome.event.ts,
    )
