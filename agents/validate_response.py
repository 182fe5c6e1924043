"""validate-response: the last word. Reviews the model's answer (schema validity, groundedness
against the request's context, the tenant's output policy) and then either answers, blocks with
the tenant's safe message, or sends the request back to infer: a repair re-ask with the
validation error, or another, stronger model. The final Response goes to the reply topic."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from datetime import datetime

from agents.checks.output_policy import OutputPolicy, PiiDetector
from agents.checks.pii import find_pii, restore
from agents.checks.review import Action, ResponsePolicy, ReviewInput, ReviewOutcome, review_response
from agents.compiled import PerTenantConfig
from agents.inference.stream_guard import StreamGuard
from schemas import (
    ChatMessage,
    Checks,
    Envelope,
    ErrorCode,
    ErrorInfo,
    Inference,
    RouteDecision,
    Stage,
    Status,
    Usage,
)
from sluice.outcome import Identity, Outcome, Spend, fail, finish, forward
from sluice.providers.catalog import Catalog, ModelEntry
from sluice.tenants import TenantConfig
from sluice.tokens import estimate_tokens

STAGE = Stage.VALIDATE_RESPONSE
TIER_ORDER = {"small": 0, "medium": 1, "large": 2}
UNUSABLE = {"empty", "schema_invalid"}  # checks whose failure leaves no answer worth sending


def _build_policy(tenant: TenantConfig) -> ResponsePolicy:
    rules = tenant.output
    return ResponsePolicy(
        output=OutputPolicy(
            banned_terms=rules.banned_terms,
            competitors=rules.competitors,
            profanity=rules.profanity,
            domain=rules.domain,
            domain_keywords=rules.domain_keywords,
            brand_names=rules.brand_names,
            allow_creative=rules.allow_creative,
        ),
        actions={check: Action(action) for check, action in rules.actions.items()},
        hallucination_threshold=rules.hallucination_threshold,
        max_repair_attempts=rules.max_repair_attempts,
        max_retries=rules.max_retries,
        safe_message=rules.safe_message,
    )


# The review library's policy for a tenant, compiled once per configuration.
response_policy = PerTenantConfig(_build_policy)

_NOT_WORD = re.compile(r"[\W_]+")


def fingerprint(text: str) -> str:
    """A short hash of text with case, punctuation and spacing ignored: two phrasings that differ
    only in those count as the same question (or answer) for the consistency metric."""
    normalised = " ".join(_NOT_WORD.sub(" ", text.casefold()).split())
    return hashlib.blake2b(normalised.encode(), digest_size=8).hexdigest()


def analytics_attributes(envelope: Envelope, content: str) -> dict[str, str]:
    """What the warehouse needs from a final event for token utilisation and content consistency:
    the request's max_tokens and fingerprints of its last user message and of the answer."""
    questions = [m.content for m in envelope.request.messages if m.role == "user"]
    return {
        "max_tokens": str(envelope.request.max_tokens),
        "question_hash": fingerprint(questions[-1]) if questions else "",
        "answer_hash": fingerprint(content),
    }


def pii_findings(text: str) -> list[tuple[str, str]]:
    """The sanitizer's PII detectors, reused to catch personal data leaking into answers."""
    return [(match.type.value, match.value) for match in find_pii(text)]


def retry_misfit(
    entry: ModelEntry,
    envelope: Envelope,
    tenant: TenantConfig,
    catalog: Catalog,
    extra_prompt_tokens: int = 0,
) -> str | None:
    """Why one more call to `entry` would leave the tenant's access rules (None: it fits): a
    model outside `allowed_models` (as the router reads it: catalog names listed; none: all),
    or a worst case (estimated prompt + max_tokens) that, added to what the request has already
    cost, exceeds `max_cost_per_request_usd`."""
    names = {model.name for model in catalog.models}
    allowed = {name for name in tenant.access.allowed_models if name in names}
    if allowed and entry.name not in allowed:
        return f"{entry.name} is not in access.allowed_models"
    cap = tenant.access.max_cost_per_request_usd
    if cap is None:
        return None
    prompt_tokens = (envelope.route.estimated_prompt_tokens if envelope.route else 0) + extra_prompt_tokens
    worst = total_cost_usd(envelope) + entry.cost_usd(prompt_tokens, envelope.request.max_tokens)
    if worst > cap:
        return f"{entry.name} would bring the request to ${worst:.6f} > access.max_cost_per_request_usd"
    return None


def stronger_model(
    catalog: Catalog, envelope: Envelope, tenant: TenantConfig | None = None
) -> ModelEntry | None:
    """The cheapest untried model of at least the current tier (a retry should not get weaker)
    that stays inside the tenant's allowed models and cost cap."""
    current = catalog.get(envelope.route.model) if envelope.route else None
    floor = TIER_ORDER[current.tier] if current else 0
    rules = tenant or TenantConfig()
    candidates = [
        entry
        for entry in catalog.models
        if entry.name not in envelope.tried_models
        and TIER_ORDER[entry.tier] >= floor
        and retry_misfit(entry, envelope, rules, catalog) is None
    ]
    return min(candidates, key=lambda e: (TIER_ORDER[e.tier], e.output_price_per_1k), default=None)


def validate_response(
    envelope: Envelope,
    now: datetime,
    *,
    tenant: TenantConfig | None = None,
    catalog: Catalog | None = None,
    pii_detector: PiiDetector | None = None,
) -> Outcome:
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
            usage=envelope.earlier_usage,
            cost_usd=envelope.earlier_cost_usd,
            checks=Checks(flags=list(envelope.flags)),
            spend=Spend.of(envelope),
        )
    request = envelope.request
    response_format = request.response_format
    calls = inference.tool_calls or []
    # A tool call is checked like an answer (its arguments can leak as well), but it is no
    # answer to the response_format: that applies to the text the model writes afterwards.
    reviewed = "\n".join([inference.content or "", *(c.function.arguments for c in calls)]).strip()
    if calls:
        response_format = None
    review = review_response(
        reviewed,
        inference.finish_reason,
        ReviewInput(
            messages=tuple((m.role, m.content) for m in request.messages),
            context=tuple((p.id, p.text) for p in request.context),
            response_format=response_format.type if response_format else None,
            json_schema=response_format.json_schema if response_format else None,
            repair_attempts=envelope.repair_attempts,
            retries=envelope.retries,
        ),
        response_policy(tenant or TenantConfig()),
        pii_detector=pii_detector,
    )
    streamed_attributes = stream_attributes(inference)
    if inference.stream_cut is not None:  # the stream's own checks ended it mid-answer
        safe_message = response_policy(tenant or TenantConfig()).safe_message
        return _cut_stream(envelope, inference, safe_message, now, started)
    if inference.streamed and review.decision is Action.RETRY:
        # text already reached the client: whole-answer checks are a verdict, not a second try
        review = dataclasses.replace(review, decision=Action.FLAG, repair_prompt=None)
    flags = sorted({*envelope.flags, *review.flags})
    checks = Checks(
        groundedness=review.groundedness,
        hallucination=review.hallucination,
        schema_valid=review.schema_valid,
        flags=flags,
    )
    attributes = {key: str(value) for key, value in review.scores.items()} | streamed_attributes
    if review.decision is Action.RETRY and catalog is not None:
        again = _send_back(envelope, review, catalog, flags, tenant or TenantConfig())
        if isinstance(again, str):  # a retry was due, but none fits the tenant's access rules
            return finish(
                who,
                STAGE,
                Status.FAILED,
                reply_to=envelope.reply_to,
                received_at=envelope.received_at,
                now=now,
                duration_ms=_elapsed(started),
                error=ErrorInfo(code=ErrorCode.RESPONSE_INVALID, message=again, stage=STAGE),
                model=inference.model,
                usage=total_usage(envelope),
                cost_usd=total_cost_usd(envelope),
                checks=checks,
                attributes={**attributes, "retry": "refused_by_access_rules"},
                spend=Spend.of(envelope),
            )
        if again is not None:
            return forward(
                again,
                STAGE,
                now=now,
                duration_ms=_elapsed(started),
                model=inference.model,
                attributes={**attributes, "retry": (again.followup and "repair") or "stronger_model"},
                flags=flags,
            )
    unusable = review.decision is Action.RETRY and bool(UNUSABLE & set(review.reasons))
    if review.decision is Action.BLOCK or unusable:
        # A retry that could not happen (nothing left to try) leaves an unusable answer unusable.
        default = ErrorCode.RESPONSE_INVALID if unusable else ErrorCode.POLICY_VIOLATION
        code = ErrorCode(review.error_code) if review.error_code else default
        status = Status.FAILED if code is ErrorCode.RESPONSE_INVALID else Status.BLOCKED
        message = review.safe_message or "the answer did not pass the tenant's output policy"
        return finish(
            who,
            STAGE,
            status,
            reply_to=envelope.reply_to,
            received_at=envelope.received_at,
            now=now,
            duration_ms=_elapsed(started),
            error=ErrorInfo(code=code, message=_block_reason(review, message), stage=STAGE),
            model=inference.model,
            content=review.safe_message if status is Status.BLOCKED else None,
            usage=total_usage(envelope),
            cost_usd=total_cost_usd(envelope),
            checks=checks,
            attributes=attributes,
            spend=Spend.of(envelope),
        )
    content = inference.content or ""
    if envelope.redactions:  # the tenant asked for its redacted values back in the answer
        content = restore(content, envelope.redactions)
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
        tool_calls=inference.tool_calls,
        finish_reason=inference.finish_reason,
        usage=total_usage(envelope),
        cost_usd=total_cost_usd(envelope),
        checks=checks,
        attributes={
            **attributes,
            "finish_reason": inference.finish_reason or "",
            **analytics_attributes(envelope, content),
        },
        spend=Spend.of(envelope),
    )


def review_input(envelope: Envelope) -> ReviewInput:
    """What the checks need to know of the request, for a stream's checks (validate_response's
    own review adds the retry counters)."""
    request = envelope.request
    response_format = request.response_format
    return ReviewInput(
        messages=tuple((m.role, m.content) for m in request.messages),
        context=tuple((p.id, p.text) for p in request.context),
        response_format=response_format.type if response_format else None,
        json_schema=response_format.json_schema if response_format else None,
    )


def stream_guard(envelope: Envelope, tenant: TenantConfig) -> StreamGuard:
    """The checks a streamed answer passes through as its text is released (windowed or
    asynchronous)."""
    return StreamGuard(
        response_policy(tenant),
        review_input(envelope),
        pii_findings,
        window=tenant.output.stream_window_sentences,
        hold_back=tenant.output.stream_checks != "asynchronous",
    )


def stream_attributes(inference: Inference) -> dict[str, str]:
    """What the final event records of a streamed answer: time to first token and any cut."""
    if not inference.streamed and inference.stream_cut is None:
        return {}
    found = {"streamed": "true"}
    if inference.ttft_ms is not None:
        found["ttft_ms"] = f"{inference.ttft_ms:.3f}"
    if inference.stream_cut is not None:
        found["stream_cut"] = inference.stream_cut
    return found


def _cut_stream(
    envelope: Envelope, inference: Inference, safe_message: str, now: datetime, started: float
) -> Outcome:
    """A stream its checks cut: blocked, the tenant's safe message, finish_reason
    content_filter; the tokens the model wrote are paid for."""
    flags = sorted({*envelope.flags, "stream_cut", inference.stream_cut or ""} - {""})
    return finish(
        Identity.of(envelope),
        STAGE,
        Status.BLOCKED,
        reply_to=envelope.reply_to,
        received_at=envelope.received_at,
        now=now,
        duration_ms=_elapsed(started),
        error=ErrorInfo(
            code=ErrorCode.POLICY_VIOLATION,
            message=f"{safe_message} (stream stopped by {inference.stream_cut})",
            stage=STAGE,
        ),
        model=inference.model,
        content=safe_message,
        finish_reason="content_filter",
        usage=total_usage(envelope),
        cost_usd=total_cost_usd(envelope),
        checks=Checks(flags=flags),
        attributes=stream_attributes(inference),
        spend=Spend.of(envelope),
    )


def _send_back(
    envelope: Envelope, review: ReviewOutcome, catalog: Catalog, flags: list[str], tenant: TenantConfig
) -> Envelope | str | None:
    """The envelope for one more model call; None when there is nothing left to try; the
    reason (a str) when models are left but none within the tenant's allowed models and cost cap."""
    inference = envelope.inference
    assert inference is not None
    if review.repair_prompt:
        current = catalog.get(envelope.route.model) if envelope.route else None
        extra = estimate_tokens([inference.content or "", review.repair_prompt])
        misfit = retry_misfit(current, envelope, tenant, catalog, extra) if current else None
        if misfit is not None:
            return _refused(review, misfit)
        followup = [
            ChatMessage(role="assistant", content=inference.content or ""),
            ChatMessage(role="user", content=review.repair_prompt),
        ]
        return envelope.model_copy(
            update={
                "followup": followup,
                "repair_attempts": envelope.repair_attempts + 1,
                "inference": None,
                "flags": flags,
                "earlier_usage": total_usage(envelope),
                "earlier_cost_usd": total_cost_usd(envelope),
            }
        )
    entry = stronger_model(catalog, envelope, tenant)
    if entry is None:
        if stronger_model(catalog, envelope) is not None:
            return _refused(review, "no untried model within the tenant's allowed models and cost cap")
        return None
    earlier = envelope.route
    route = RouteDecision(
        model=entry.name,
        reason=f"retry after {', '.join(review.reasons) or 'review'}",
        provider_kind=entry.kind,
        # The request still belongs to its route and arm (the feedback loop joins on them).
        route=earlier.route if earlier else "",
        tier=entry.tier,
        arm=earlier.arm if earlier else None,
        estimated_prompt_tokens=earlier.estimated_prompt_tokens if earlier else 0,
        baseline_model=earlier.baseline_model if earlier else None,
    )
    return envelope.model_copy(
        update={
            "route": route,
            "retries": envelope.retries + 1,
            "inference": None,
            "followup": [],
            "flags": flags,
            "earlier_usage": total_usage(envelope),
            "earlier_cost_usd": total_cost_usd(envelope),
        }
    )


def _refused(review: ReviewOutcome, why: str) -> str:
    checks = ", ".join(review.reasons) or "review"
    return f"the answer failed {checks} and cannot be retried within this tenant's access rules: {why}"


def total_usage(envelope: Envelope) -> Usage:
    """Tokens of every model call this request made: earlier (sent back) calls plus this one."""
    earlier, current = envelope.earlier_usage, envelope.inference.usage if envelope.inference else Usage()
    return Usage(
        prompt_tokens=earlier.prompt_tokens + current.prompt_tokens,
        completion_tokens=earlier.completion_tokens + current.completion_tokens,
        total_tokens=earlier.total_tokens + current.total_tokens,
    )


def total_cost_usd(envelope: Envelope) -> float:
    """What the request cost in all: a retry or repair is paid for, so it is on the bill."""
    return envelope.earlier_cost_usd + (envelope.inference.cost_usd if envelope.inference else 0.0)


def _block_reason(review: ReviewOutcome, message: str) -> str:
    reasons = ", ".join(review.reasons) or ", ".join(review.flags)
    return f"{message} ({reasons})" if reasons else message


def _elapsed(started: float) -> float:
    return (time.perf_counter() - started) * 1000
