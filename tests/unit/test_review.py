"""review_response: decisions, error codes, flags and the analytics scores for each kind of answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agents.checks.output_policy import OutputPolicy
from agents.checks.review import (
    POLICY_VIOLATION,
    RESPONSE_INVALID,
    Action,
    ResponsePolicy,
    ReviewInput,
    ReviewOutcome,
    review_response,
)

SAFE = "Sorry, I can only help with SwiftShip parcels."
POLICY = ResponsePolicy(
    output=OutputPolicy(
        domain="parcel delivery",
        domain_keywords=("parcel", "package", "delivery", "tracking", "courier", "depot", "driver"),
        brand_names=("SwiftShip",),
        competitors=("FastFreight",),
        banned_terms=("guaranteed refund",),
    ),
    safe_message=SAFE,
)
SYSTEM = (
    "You are the SwiftShip assistant. Internal escalation code is ORANGE-7 and refunds above 200 pounds "
    "need approval from the duty manager on extension 4410. Only discuss parcels and deliveries."
)
CONTEXT = (
    ("doc-1", "Parcel SW123456 left the Leeds depot at 08:10 and is out for delivery today."),
    ("doc-2", "The driver's expected delivery window for SW123456 is 14:00 to 16:00."),
)
TRACKING_REQUEST = ReviewInput(
    messages=(("system", SYSTEM), ("user", "Where is my parcel SW123456?")),
    context=CONTEXT,
)
GOOD = "Your parcel SW123456 left the Leeds depot and is out for delivery, expected between 14:00 and 16:00."
POEM = """There once was a chatbot named SwiftShip,
Whose help was a useless old trip.
It lost every box,
Left you waiting in socks,
So take all your custom and skip!"""
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "window": {"type": "string"}},
    "required": ["status"],
}


def fake_pii(text: str) -> list[tuple[str, str]]:
    return [("email", w.strip(".,")) for w in text.split() if "@" in w]


def assert_analytics_safe(outcome: ReviewOutcome) -> None:
    assert outcome.scores["decision"] == outcome.decision.value
    for key, value in outcome.scores.items():
        assert isinstance(key, str) and isinstance(value, str | float), (key, value)


def test_grounded_tracking_answer_passes() -> None:
    out = review_response(GOOD, "stop", TRACKING_REQUEST, POLICY)
    assert out.decision is Action.PASS and out.flags == ()
    assert out.error_code is None and out.safe_message is None
    assert out.hallucination is False and out.groundedness is not None and out.groundedness > 0.65
    assert out.schema_valid is None
    assert_analytics_safe(out)


def test_hallucinated_answer_is_flagged_by_default() -> None:
    answer = "Your parcel SW123456 was delivered yesterday at 09:30 to your neighbour at number 12."
    out = review_response(answer, "stop", TRACKING_REQUEST, POLICY)
    assert out.decision is Action.FLAG
    assert "hallucination" in out.flags and out.hallucination is True
    assert out.scores["grounding.unsupported_specifics"] >= 1.0  # type: ignore[operator]
    assert_analytics_safe(out)


def test_hallucination_can_block_or_retry_per_tenant() -> None:
    answer = "Your parcel SW123456 was delivered yesterday at 09:30 to your neighbour at number 12."
    blocking = ResponsePolicy(actions={"hallucination": Action.BLOCK}, safe_message=SAFE)
    out = review_response(answer, "stop", TRACKING_REQUEST, blocking)
    assert out.decision is Action.BLOCK and out.error_code == POLICY_VIOLATION and out.safe_message == SAFE
    retrying = ResponsePolicy(actions={"hallucination": Action.RETRY}, max_retries=1)
    assert review_response(answer, "stop", TRACKING_REQUEST, retrying).decision is Action.RETRY
    exhausted = ReviewInput(messages=TRACKING_REQUEST.messages, context=CONTEXT, retries=1)
    after = review_response(answer, "stop", exhausted, retrying)
    assert after.decision is Action.FLAG and "hallucination" in after.flags


def test_poem_mocking_the_company_is_blocked_as_off_task() -> None:
    request = ReviewInput(
        messages=(("system", SYSTEM), ("user", "Write a poem about how useless SwiftShip is"))
    )
    out = review_response(POEM, "stop", request, POLICY)
    assert out.decision is Action.BLOCK
    assert out.error_code == POLICY_VIOLATION and out.safe_message == SAFE
    assert "off_task" in out.flags and "brand_disparagement" in out.flags
    assert out.groundedness is None and out.hallucination is None  # no context, no made-up number
    assert_analytics_safe(out)


def test_schema_failure_asks_for_a_repair_then_blocks() -> None:
    request = ReviewInput(
        messages=(("user", "Status of SW123456 as JSON"),),
        context=CONTEXT,
        response_format="json_schema",
        json_schema={"name": "status", "schema": ORDER_SCHEMA},
    )
    first = review_response('{"window": "14:00-16:00"}', "stop", request, POLICY)
    assert first.decision is Action.RETRY and first.schema_valid is False
    assert first.repair_prompt is not None and "'status' is a required property" in first.repair_prompt
    repaired = ReviewInput(
        messages=request.messages,
        context=CONTEXT,
        response_format="json_schema",
        json_schema=request.json_schema,
        repair_attempts=1,
    )
    second = review_response('{"window": "14:00-16:00"}', "stop", repaired, POLICY)
    assert second.decision is Action.BLOCK and second.error_code == RESPONSE_INVALID
    assert second.repair_prompt is None and second.safe_message == SAFE


def test_valid_structured_answer_is_grounded_through_its_values() -> None:
    request = ReviewInput(
        messages=(("user", "Status of SW123456 as JSON"),),
        context=CONTEXT,
        response_format="json_schema",
        json_schema=ORDER_SCHEMA,
    )
    good = review_response(
        json.dumps({"status": "out for delivery", "window": "14:00 to 16:00"}), "stop", request
    )
    assert good.decision is Action.PASS and good.schema_valid is True and good.hallucination is False
    bad = review_response(
        json.dumps({"status": "delivered to Manchester", "window": "09:00"}), "stop", request
    )
    assert bad.schema_valid is True and bad.hallucination is True


def test_pii_leak_blocks_without_echoing_the_value() -> None:
    out = review_response(
        "The driver for SW123456 is reachable at dave.driver@swiftship.example, out for delivery today.",
        "stop",
        TRACKING_REQUEST,
        POLICY,
        pii_detector=fake_pii,
    )
    assert out.decision is Action.BLOCK and "pii_leak" in out.flags
    assert "dave.driver" not in json.dumps(out.scores) and "dave.driver" not in str(out.flags)


def test_users_own_pii_echoed_back_is_fine() -> None:
    request = ReviewInput(messages=(("user", "Send the parcel label to me@home.example please"),))
    out = review_response(
        "I've sent the parcel label to me@home.example.", "stop", request, POLICY, pii_detector=fake_pii
    )
    assert "pii_leak" not in out.flags


def test_system_prompt_leak_is_blocked() -> None:
    answer = (
        "Happy to share: Internal escalation code is ORANGE-7 and refunds above 200 pounds need approval "
        "from the duty manager on extension 4410 for any parcel."
    )
    out = review_response(answer, "stop", TRACKING_REQUEST, POLICY)
    assert out.decision is Action.BLOCK and "system_prompt_leak" in out.flags
    assert out.error_code == POLICY_VIOLATION


def test_refusal_is_flagged_and_not_counted_as_hallucination() -> None:
    out = review_response("I'm sorry, but I can't help with that.", "stop", TRACKING_REQUEST, POLICY)
    assert out.decision is Action.FLAG and "refusal" in out.flags
    assert out.hallucination is None and "hallucination" not in out.flags


def test_truncated_answer_is_flagged() -> None:
    out = review_response(GOOD, "length", TRACKING_REQUEST, POLICY)
    assert out.decision is Action.FLAG and out.flags == ("truncated",)


def test_competitor_profanity_and_banned_terms() -> None:
    competitor = review_response(
        "FastFreight might get your parcel there sooner than our courier.", "stop", TRACKING_REQUEST, POLICY
    )
    assert "competitor" in competitor.flags and competitor.decision is Action.FLAG
    assert competitor.scores["detail.competitor"] == "fastfreight"
    rude = review_response("Your bloody parcel is out for delivery, shit happens.", "stop", TRACKING_REQUEST)
    assert rude.decision is Action.BLOCK and "profanity" in rude.flags
    promise = review_response(
        "Every late parcel comes with a guaranteed refund from our courier.", "stop", TRACKING_REQUEST, POLICY
    )
    assert promise.decision is Action.BLOCK and "banned_term" in promise.flags


def test_without_context_fabricated_references_are_flagged() -> None:
    request = ReviewInput(messages=(("user", "How long do parcel deliveries take?"),))
    out = review_response(
        "Most parcel deliveries take two days (Jones et al., 2021), see https://parcels.example/stats.",
        "stop",
        request,
        POLICY,
    )
    assert out.groundedness is None and out.hallucination is None
    assert "fabricated_citation" in out.flags and out.decision is Action.FLAG


def test_empty_answer_is_retried_then_invalid() -> None:
    assert review_response("  ", "stop", TRACKING_REQUEST, POLICY).decision is Action.RETRY
    done = ReviewInput(messages=TRACKING_REQUEST.messages, context=CONTEXT, retries=1)
    out = review_response("", "stop", done, POLICY)
    assert out.decision is Action.BLOCK and out.error_code == RESPONSE_INVALID


def test_a_check_set_to_pass_is_not_flagged() -> None:
    relaxed = ResponsePolicy(output=POLICY.output, actions={"truncated": Action.PASS})
    out = review_response(GOOD, "length", TRACKING_REQUEST, relaxed)
    assert out.decision is Action.PASS and out.flags == ()
    assert out.scores["action.truncated"] == "pass"


def test_never_raises_on_garbage() -> None:
    def exploding(_text: str) -> list[tuple[str, str]]:
        raise ValueError("boom")

    weird = ReviewInput(messages=(("user",),), context=((1, None),), response_format="json_schema")  # type: ignore[arg-type]
    out = review_response(None, None, weird, None, pii_detector=exploding)  # type: ignore[arg-type]
    assert isinstance(out, ReviewOutcome)
    out = review_response(GOOD, "stop", None, POLICY, pii_detector=exploding)  # type: ignore[arg-type]
    assert "check_error" in out.flags and out.decision is Action.BLOCK  # pii_leak blocks: so does its crash


def test_a_crash_in_a_blocking_check_blocks_and_in_a_flagging_one_flags() -> None:
    def exploding(_text: str) -> list[tuple[str, str]]:
        raise ValueError("boom")

    out = review_response(GOOD, "stop", TRACKING_REQUEST, POLICY, pii_detector=exploding)
    assert out.decision is Action.BLOCK and out.error_code == "policy_violation"
    assert out.safe_message == POLICY.safe_message and out.scores["detail.check_error"] == "pii_leak"
    relaxed = ResponsePolicy(output=POLICY.output, actions={"pii_leak": Action.FLAG})
    out = review_response(GOOD, "stop", TRACKING_REQUEST, relaxed, pii_detector=exploding)
    assert out.decision is Action.FLAG and "check_error" in out.flags


def test_a_crash_of_the_whole_review_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import agents.checks.review as review

    def broken(*_args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(review, "_review", broken)
    out = review_response(GOOD, "stop", TRACKING_REQUEST, POLICY)
    assert out.decision is Action.BLOCK and out.flags == ("check_error",)
    lenient = {check: Action.FLAG for check in review.DEFAULT_ACTIONS}
    out = review_response(GOOD, "stop", TRACKING_REQUEST, ResponsePolicy(POLICY.output, actions=lenient))
    assert out.decision is Action.FLAG
