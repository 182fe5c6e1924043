"""validate-response: the last word. Checks the model's answer (non-empty; valid JSON when
JSON was asked for) and sends the one final Response to the request's reply topic."""

from __future__ import annotations

import time
from datetime import datetime

import orjson

from schemas import Checks, Envelope, ErrorCode, ErrorInfo, Stage, Status
from sluice.outcome import Identity, Outcome, fail, finish

STAGE = Stage.VALIDATE_RESPONSE


def validate_response(envelope: Envelope, now: datetime) -> Outcome:
    started = time.perf_counter()
    inference = envelope.inference
    if inference is None:
        return fail(
            envelope,
            STAGE,
            Status.FAILED,
            ErrorCode.INTERNAL,
            "no inference result reached this stage",
            now=now,
            duration_ms=_elapsed(started),
        )
    who = Identity.of(envelope)
    if inference.error is not None:
        return finish(
            who,
            STAGE,
            Status.FAILED,
            reply_to=envelope.reply_to,
            received_at=envelope.received_at,
            now=now,
            duration_ms=_elapsed(started),
            error=inference.error,
            model=inference.model,
            checks=Checks(flags=list(envelope.flags)),
        )
    checks = Checks(flags=list(envelope.flags))
    problem = None
    content = inference.content or ""
    if not content.strip():
        problem = "the model returned empty content"
    response_format = envelope.request.response_format
    if response_format is not None and response_format.type != "text":
        try:
            orjson.loads(content)
            checks.schema_valid = True
        except orjson.JSONDecodeError:
            checks.schema_valid = False
            problem = problem or "the model's answer is not valid JSON although JSON was requested"
    if problem is not None:
        return finish(
            who,
            STAGE,
            Status.FAILED,
            reply_to=envelope.reply_to,
            received_at=envelope.received_at,
            now=now,
            duration_ms=_elapsed(started),
            error=ErrorInfo(code=ErrorCode.RESPONSE_INVALID, message=problem, stage=STAGE),
            model=inference.model,
            usage=inference.usage,
            cost_usd=inference.cost_usd,
            checks=checks,
        )
    return finish(
        who,
        STAGE,
        Status.OK,
        reply_to=envelope.reply_to,
        received_at=envelope.received_at,
        now=now,
        duration_ms=_elapsed(started),
        model=inference.model,
        content=content,
        usage=inference.usage,
        cost_usd=inference.cost_usd,
        checks=checks,
        attributes={"finish_reason": inference.finish_reason or ""},
    )


def _elapsed(started: float) -> float:
    return (time.perf_counter() - started) * 1000
