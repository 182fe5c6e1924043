"""validate-response: the last word. Reviews the model's answer (schema validity, groundedness
against the request's context, the tenant's output policy) and then either answers, blocks with
the tenant's safe message, or sends the request back to infer: a repair re-ask with the
validation error, or another, stronger model. The final Response goes to the reply topic."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import datetime

from agents.checks.output_policy import OutputPolicy, PiiDetector
from agents.checks.pii import find_pii, restore
from agents.checks.review import Action, ResponsePolicy, ReviewInput, ReviewOutcome, review_response
from agents.compiled import PerTenantConfig
from schemas import ChatMessage, Checks, Envelope, ErrorCode, ErrorInfo, RouteDecision, Stage, Status, Usage
from sluice.outcome import Identity, Outcome, Spend, fail, finish, forward
from sluice.providers.catalog import Catalog, ModelEntry
from sluice.tenants import TenantConfig

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


def stronger_model(catalog: Catalog, envelope: Envelope) -> ModelEntry | None:
    """The cheapest untried model of at least the current tier (a retry should not get weaker)."""
    current = catalog.get(envelope.route.model) if envelope.route else None
    floor = TIER_ORDER[current.tier] if current else 0
    candidates = [
        entry
        for entry in catalog.models
        if entry.name not in envelope.tried_models and TIER_ORDER[entry.tier] >= floor
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
    review = review_response(
        inference.content or "",
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
    flags = sorted({*envelope.flags, *review.flags})
    checks = Checks(
        groundedness=review.groundedness,
        hallucination=review.hallucination,
        schema_valid=review.schema_valid,
        flags=flags,
    )
    attributes = {key: str(value) for key, value in review.scores.items()}
    if review.decision is Action.RETRY and catalog is not None:
        again = _send_back(envelope, review, catalog, flags)
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


def _send_back(
    envelope: Envelope, review: ReviewOutcome, catalog: Catalog, flags: list[str]
) -> Envelope | None:
    """The envelope for one more model call, or None when there is nothing left to try."""
    inference = envelope.inference
    assert inference is not None
    if review.repair_prompt:
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
    entry = stronger_model(catalog, envelope)
    if entry is None:
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
