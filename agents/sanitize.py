"""sanitize: make the prompt safe to pass on. Normalises text (NFKC, no control, zero-width or
bidi characters), enforces abuse limits, redacts personal data before it can reach a model
provider, and scores direct and indirect prompt injection: allow, flag (the answer carries the
flag) or block (`blocked`, `prompt_injection`). Decisions are recorded in the stage event as
scores and counts, never as text (unless the tenant opts in to storing redacted text)."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import Any

from agents.checks.sanitizer import Action, SanitizeOutcome, SanitizePolicy, sanitize_request
from agents.compiled import PerTenantConfig
from schemas import ChatMessage, ContextPassage, Envelope, ErrorCode, Stage, Status
from sluice.outcome import Outcome, fail, forward
from sluice.tenants import TenantConfig

STAGE = Stage.SANITIZE
STORED_TEXT_LIMIT = 2000
TOOL_PASSAGE = "tool:"  # a tool result's passage id: tool:<tool_call_id>


def _compile_sanitize_policy(tenant: TenantConfig) -> SanitizePolicy:
    return SanitizePolicy().override(tenant.input.policy)


# The sanitizer policy for a tenant, compiled once per configuration.
sanitize_policy = PerTenantConfig(_compile_sanitize_policy)


def sanitize(envelope: Envelope, now: datetime, *, tenant: TenantConfig | None = None) -> Outcome:
    started = time.perf_counter()
    tenant = tenant or TenantConfig()
    request = envelope.request
    # Tool results are untrusted text a tool fetched: they go through the indirect-injection
    # check with the context passages (flag, neutralise or drop), not the direct one.
    tool_turns = [m for m in request.messages if m.role == "tool"]
    turns = [m for m in request.messages if m.role != "tool"]
    result = sanitize_request(
        [(m.role, m.content) for m in turns],
        [(p.id, p.text) for p in request.context]
        + [(f"{TOOL_PASSAGE}{m.tool_call_id}", m.content) for m in tool_turns],
        sanitize_policy(tenant),
    )
    attributes = event_attributes(result, tenant)
    if result.decision.action is Action.BLOCK:
        code = ErrorCode(result.decision.code or ErrorCode.PROMPT_INJECTION.value)
        status = Status.REJECTED if code is ErrorCode.PAYLOAD_TOO_LARGE else Status.BLOCKED
        blocked = envelope.model_copy(update={"flags": sorted({*envelope.flags, *result.flags})})
        return fail(
            blocked,
            STAGE,
            status,
            code,
            result.decision.reason,
            now=now,
            duration_ms=_elapsed(started),
            attributes=attributes,
        )
    messages = _rejoin(request.messages, result.messages, result.context[len(request.context) :])
    context = [ContextPassage(id=pid, text=text) for pid, text in result.context[: len(request.context)]]
    cleaned = envelope.model_copy(
        update={
            "request": request.model_copy(
                update={"messages": messages or request.messages[:0], "context": context}
            ),
            "flags": sorted({*envelope.flags, *result.flags}),
            "redactions": result.mapping.as_dict() if tenant.input.restore_pii else {},
        }
    )
    return forward(cleaned, STAGE, now=now, duration_ms=_elapsed(started), attributes=attributes)


def event_attributes(result: SanitizeOutcome, tenant: TenantConfig) -> dict[str, str]:
    """Scores, counts and hashes for the event; text only when the tenant asked for it."""
    analytics: dict[str, Any] = result.analytics()
    attributes = {
        "decision": str(analytics["decision"]),
        "reason": str(analytics["reason"])[:200],
        "risk_score": f"{result.risk_score:.3f}",
        "context_risk": f"{result.context_risk:.3f}",
        "techniques": ",".join(result.techniques),
        "abuse": ",".join(analytics["abuse"]),
        "prompt_chars": str(sum(len(content) for _, content in result.messages)),
        "prompt_sha256": hashlib.sha256(
            "\n".join(content for _, content in result.messages).encode("utf-8", "surrogatepass")
        ).hexdigest(),
    }
    attributes.update({f"score.{name}": f"{score:.3f}" for name, score in result.detector_scores.items()})
    attributes.update({f"redacted.{kind}": str(count) for kind, count in result.redaction_counts.items()})
    for passage in result.passages:
        attributes[f"passage.{passage.id}"] = f"{passage.action.value}:{passage.risk:.3f}"
    if tenant.input.store_redacted_text:
        attributes["prompt_redacted"] = "\n".join(content for _, content in result.messages)[
            :STORED_TEXT_LIMIT
        ]
    return attributes


def _rejoin(
    original: list[ChatMessage], turns: list[tuple[str, str]], tool_results: list[tuple[str, str]]
) -> list[ChatMessage]:
    """The cleaned messages in their original order: the sanitized text of each turn, each
    tool result's cleaned text, and the tool-call fields unchanged."""
    cleaned_turns, cleaned_tools = iter(turns), iter(tool_results)
    rejoined: list[ChatMessage] = []
    for message in original:
        _, text = next(cleaned_tools) if message.role == "tool" else next(cleaned_turns)
        rejoined.append(message.model_copy(update={"content": text}))
    return rejoined


def _elapsed(started: float) -> float:
    return (time.perf_counter() - started) * 1000
