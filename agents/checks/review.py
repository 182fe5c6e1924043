"""review_response: every check on one model answer, folded into one decision for the stage.

Pure and total: plain data in, plain data out, no I/O, and it never raises, because the last stage
of the pipeline must always answer the client. Each check that fires maps to a tenant-configurable
action (pass, flag, retry, block); the strongest action wins. The outcome also carries a flat
dict of scores for the analytics event, so the hallucination rate per model can be charted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agents.checks.grounding import DEFAULT_HALLUCINATION_THRESHOLD, GroundingResult, score_groundedness
from agents.checks.output_policy import CHECKS_OF_RUNNER, Finding, OutputPolicy, PiiDetector, check_output
from agents.checks.schema_check import SchemaResult, build_repair_prompt, check_schema

log = logging.getLogger(__name__)

RESPONSE_INVALID = "response_invalid"
POLICY_VIOLATION = "policy_violation"
DEFAULT_SAFE_MESSAGE = "Sorry, I can't help with that. Please rephrase your request or contact support."


class Action(StrEnum):
    PASS = "pass"
    FLAG = "flag"
    RETRY = "retry"
    BLOCK = "block"


_SEVERITY = {Action.PASS: 0, Action.FLAG: 1, Action.RETRY: 2, Action.BLOCK: 3}

# The check names double as flag names. Defaults favour the client getting an answer: only content
# that is harmful to show (leaks, abuse, off-brand output) is blocked; doubtful answers are flagged.
DEFAULT_ACTIONS: Mapping[str, Action] = {
    "schema_invalid": Action.RETRY,
    "hallucination": Action.FLAG,
    "fabricated_citation": Action.FLAG,
    "low_confidence": Action.FLAG,
    "off_task": Action.BLOCK,
    "brand_disparagement": Action.BLOCK,
    "pii_leak": Action.BLOCK,
    "system_prompt_leak": Action.BLOCK,
    "refusal": Action.FLAG,
    "truncated": Action.FLAG,
    "competitor": Action.FLAG,
    "profanity": Action.BLOCK,
    "banned_term": Action.BLOCK,
    "banned_topic": Action.BLOCK,
    "empty": Action.RETRY,
    "check_error": Action.FLAG,
}


@dataclass(frozen=True, slots=True)
class ReviewInput:
    """What the request asked for, as plain data: messages as (role, content), passages as (id, text)."""

    messages: tuple[tuple[str, str], ...] = ()
    context: tuple[tuple[str, str], ...] = ()
    response_format: str | None = None
    json_schema: Mapping[str, Any] | None = None
    repair_attempts: int = 0
    retries: int = 0


@dataclass(frozen=True, slots=True)
class ResponsePolicy:
    """A tenant's response policy: content rules, per-check actions and limits."""

    output: OutputPolicy = field(default_factory=OutputPolicy)
    actions: Mapping[str, Action] = field(default_factory=dict)
    hallucination_threshold: float = DEFAULT_HALLUCINATION_THRESHOLD
    max_repair_attempts: int = 1
    max_retries: int = 1
    on_retries_exhausted: Action = Action.FLAG
    safe_message: str = DEFAULT_SAFE_MESSAGE

    def action_for(self, check: str) -> Action:
        configured = self.actions.get(check, DEFAULT_ACTIONS.get(check, Action.FLAG))
        try:
            return Action(configured)
        except ValueError:
            log.warning("unknown action %r for check %s; flagging instead", configured, check)
            return Action.FLAG


@dataclass(frozen=True, slots=True)
class ReviewOutcome:
    """The stage's instructions. error_code and safe_message are set only when decision is block;
    repair_prompt only when the retry is a structured-output repair re-ask."""

    decision: Action
    error_code: str | None
    safe_message: str | None
    flags: tuple[str, ...]
    groundedness: float | None
    hallucination: bool | None
    schema_valid: bool | None
    scores: dict[str, str | float]
    repair_prompt: str | None = None
    reasons: tuple[str, ...] = ()


def review_response(
    answer: str,
    finish_reason: str | None,
    request: ReviewInput,
    policy: ResponsePolicy | None = None,
    *,
    pii_detector: PiiDetector | None = None,
) -> ReviewOutcome:
    """Review one answer. Never raises: an internal failure becomes a check_error outcome rather
    than an exception the stage would have to handle. It fails closed: when the checks that did
    not run include one whose action is block (pii_leak, system_prompt_leak, ... by default),
    the answer is blocked; otherwise it is flagged (the check_error action)."""
    policy = policy if isinstance(policy, ResponsePolicy) else ResponsePolicy()
    request = request if isinstance(request, ReviewInput) else ReviewInput()
    try:
        return _review(
            answer if isinstance(answer, str) else str(answer or ""),
            finish_reason,
            request,
            policy,
            pii_detector,
        )
    except Exception:
        action = _crash_action(policy, DEFAULT_ACTIONS.keys() | policy.actions.keys())
        blocked = action is Action.BLOCK
        log.exception("review_response failed; the answer is %s", "blocked" if blocked else "flagged")
        return ReviewOutcome(
            decision=action,
            error_code=POLICY_VIOLATION if blocked else None,
            safe_message=policy.safe_message if blocked else None,
            flags=("check_error",),
            groundedness=None,
            hallucination=None,
            schema_valid=None,
            scores={"decision": action.value, "error.review": "exception"},
        )


def _review(
    answer: str,
    finish_reason: str | None,
    request: ReviewInput,
    policy: ResponsePolicy,
    pii_detector: PiiDetector | None,
) -> ReviewOutcome:
    fired: dict[str, str] = {}
    scores: dict[str, str | float] = {}
    messages = _messages(request)
    system_prompt = "\n".join(c for r, c in messages if r == "system")
    user_text = "\n".join(c for r, c in messages if r == "user")
    question = next((c for r, c in reversed(messages) if r == "user"), "")
    context = _context(request)
    context_text = "\n".join(t for _i, t in context)

    if not answer.strip():
        fired["empty"] = "the model returned empty content"

    schema, repair_prompt = _schema(answer, request, policy, fired, scores)
    structured = request.response_format in ("json_object", "json_schema")

    findings, policy_scores = check_output(
        answer,
        policy.output,
        system_prompt=system_prompt,
        user_text=user_text,
        context_text=context_text,
        finish_reason=finish_reason,
        pii_detector=pii_detector,
        check_off_task=not structured,
    )
    scores.update(policy_scores)
    for f in findings:
        if f.check == "check_error":
            _crashed(fired, f.detail)
        else:
            fired.setdefault(f.check, _detail(f))

    grounding: GroundingResult | None = None
    if "refusal" in fired or "empty" in fired:
        scores["grounding.skipped"] = "refusal" if "refusal" in fired else "empty"
    else:
        grounding_text = answer
        if schema.schema_valid and schema.value is not None:
            grounding_text = "\n".join(_leaves(schema.value))
        grounding = _grounding(grounding_text, context, question, user_text, policy, fired, scores)

    return _decide(fired, scores, schema, grounding, repair_prompt, request, policy)


def _messages(request: ReviewInput) -> list[tuple[str, str]]:
    out = []
    for item in request.messages or ():
        if isinstance(item, tuple | list) and len(item) == 2:
            out.append((str(item[0]), str(item[1])))
    return out


def _context(request: ReviewInput) -> list[tuple[str, str]]:
    out = []
    for item in request.context or ():
        if isinstance(item, tuple | list) and len(item) == 2 and str(item[1]).strip():
            out.append((str(item[0]), str(item[1])))
    return out


def _detail(f: Finding) -> str:
    return f.detail[:200]


def _schema(
    answer: str,
    request: ReviewInput,
    policy: ResponsePolicy,
    fired: dict[str, str],
    scores: dict[str, str | float],
) -> tuple[SchemaResult, str | None]:
    try:
        result = check_schema(answer, request.response_format, request.json_schema)
    except Exception:
        log.exception("schema check failed")
        _crashed(fired, "schema")
        scores["error.schema"] = "exception"
        return SchemaResult(None), None
    scores["schema.valid"] = "n/a" if result.schema_valid is None else str(result.schema_valid).lower()
    if not result.schema_usable:
        scores["schema.usable"] = "false"
    if result.schema_valid is False:
        scores["schema.errors"] = float(len(result.errors))
        fired["schema_invalid"] = result.errors[0][:200] if result.errors else "invalid"
        if request.repair_attempts < policy.max_repair_attempts:
            return result, build_repair_prompt(result, request.response_format, request.json_schema)
    return result, None


def _leaves(value: Any, depth: int = 0) -> list[str]:
    """String and number leaves of parsed JSON, so structured answers are grounded too."""
    if depth > 50:
        return []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _leaves(v, depth + 1)]
    if isinstance(value, list):
        return [s for v in value for s in _leaves(v, depth + 1)]
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        return [json.dumps(value)]
    return [str(value)]


def _grounding(
    text: str,
    context: list[tuple[str, str]],
    question: str,
    user_text: str,
    policy: ResponsePolicy,
    fired: dict[str, str],
    scores: dict[str, str | float],
) -> GroundingResult | None:
    try:
        result = score_groundedness(
            text, context, question=question, request_text=user_text, threshold=policy.hallucination_threshold
        )
    except Exception:
        log.exception("grounding check failed")
        _crashed(fired, "grounding")
        scores["error.grounding"] = "exception"
        return None
    scores["grounding.fabricated_specifics"] = float(len(result.fabricated_specifics))
    if result.groundedness is not None:
        scores["groundedness"] = result.groundedness
        scores["grounding.threshold"] = policy.hallucination_threshold
        scores["grounding.claims"] = float(len(result.claims))
        scores["grounding.unsupported_claims"] = float(result.unsupported_claims)
        scores["grounding.min_claim"] = min((c.score for c in result.claims), default=1.0)
        scores["grounding.unsupported_specifics"] = float(
            sum(len(c.unsupported_specifics) for c in result.claims)
        )
        scores["grounding.misplaced_specifics"] = float(
            sum(len(c.misplaced_specifics) for c in result.claims)
        )
        scores["grounding.negation_mismatches"] = float(sum(c.negation_mismatch for c in result.claims))
        scores["grounding.bad_citations"] = float(len(result.bad_citations))
        if result.hallucination:
            fired["hallucination"] = f"groundedness={result.groundedness}"
    if result.bad_citations or result.fabricated_specifics:
        fired["fabricated_citation"] = (
            f"{len(result.bad_citations) + len(result.fabricated_specifics)} item(s)"
        )
    if result.low_confidence:
        fired["low_confidence"] = "hedged"
    return result


def _crashed(fired: dict[str, str], runner: str) -> None:
    """Record that a check runner raised (several may)."""
    earlier = fired.get("check_error")
    fired["check_error"] = f"{earlier},{runner}" if earlier else runner


# Checks decided by runners outside check_output, for a crash of theirs.
_RUNNER_CHECKS = {
    **CHECKS_OF_RUNNER,
    "schema": ("schema_invalid",),
    "grounding": ("hallucination", "fabricated_citation", "low_confidence"),
}


def _crash_action(policy: ResponsePolicy, checks: Iterable[str]) -> Action:
    """Block when any check that could not run would block; else the check_error action."""
    if any(policy.action_for(check) is Action.BLOCK for check in checks):
        return Action.BLOCK
    return policy.action_for("check_error")


def _decide(
    fired: dict[str, str],
    scores: dict[str, str | float],
    schema: SchemaResult,
    grounding: GroundingResult | None,
    repair_prompt: str | None,
    request: ReviewInput,
    policy: ResponsePolicy,
) -> ReviewOutcome:
    actions: dict[str, Action] = {}
    for check, detail in fired.items():
        if check != "schema_invalid" and detail:  # schema errors quote the answer; the rest is safe
            scores[f"detail.{check}"] = detail
        action = policy.action_for(check)
        if check == "check_error":
            runners = detail.split(",")
            action = _crash_action(policy, [c for r in runners for c in _RUNNER_CHECKS.get(r, ())])
        elif check == "schema_invalid" and repair_prompt is None:
            action = Action.BLOCK  # repair budget spent: the client must not get unparseable output
        elif action is Action.RETRY and check != "schema_invalid" and request.retries >= policy.max_retries:
            # Nothing usable left to send for an empty answer; anything else goes out as configured.
            action = Action.BLOCK if check == "empty" else policy.on_retries_exhausted
        actions[check] = action
        scores[f"action.{check}"] = action.value
    decision = max(actions.values(), key=lambda a: _SEVERITY[a], default=Action.PASS)
    flags = tuple(sorted(c for c, a in actions.items() if a is not Action.PASS))
    reasons = tuple(sorted(c for c, a in actions.items() if a is decision and decision is not Action.PASS))
    error_code = safe_message = None
    if decision is Action.BLOCK:
        only_schema = set(reasons) <= {"schema_invalid", "empty"}
        error_code = RESPONSE_INVALID if only_schema else POLICY_VIOLATION
        safe_message = policy.safe_message
    scores["decision"] = decision.value
    return ReviewOutcome(
        decision=decision,
        error_code=error_code,
        safe_message=safe_message,
        flags=flags,
        groundedness=grounding.groundedness if grounding else None,
        hallucination=grounding.hallucination if grounding else None,
        schema_valid=schema.schema_valid,
        scores=scores,
        repair_prompt=repair_prompt if decision is Action.RETRY and "schema_invalid" in reasons else None,
        reasons=reasons,
    )
