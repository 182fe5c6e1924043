"""The router for `model: auto`: features, tiers, fit, tenant policy, feedback advice, experiments,
the catalog's routing rules and the savings function infer uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from agents.route import route
from agents.routing.advice import AdviceBook, advice_key
from agents.routing.features import assess, detect_language, extract
from agents.routing.feed import apply_record
from agents.routing.router import Rejection, arm_draw, decide
from schemas import Envelope, ErrorCode, Request, RouteAdvice, RouteDecision, Stage, Status
from sluice.codec import encode
from sluice.providers.catalog import (
    BUILTIN_CATALOG,
    Catalog,
    CatalogError,
    ModelEntry,
    RoutingConfig,
    load_catalog,
)
from sluice.settings import Settings
from sluice.tenants import AccessRules, TenantConfig
from sluice.tokens import estimate_prompt_tokens, estimate_text_tokens

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SIMPLE = "What is the capital of France?"
MATH = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes muffins with four. "
    "She sells the remainder for $2 per egg. How much does she make every day?"
)
CODE = "Write a Python function that merges two sorted lists in linear time, with unit tests."
HARD = (
    "Design the architecture of a payment fraud detection service in Python: explain the trade-offs "
    "step by step, compare streaming and batch scoring, write the scoring function, and justify the "
    "latency budget. It must handle 5,000 requests per second and must include at least three tests."
)


def request(text: str = SIMPLE, **fields: Any) -> Request:
    return Request.model_validate(
        {"correlation_id": "c-1", "tenant": "acme", "messages": [{"role": "user", "content": text}], **fields}
    )


def decided(text: str = SIMPLE, request_id: str = "r-1", **kwargs: Any) -> RouteDecision:
    fields = kwargs.pop("fields", {})
    decision = decide(request(text, **fields), request_id, kwargs.pop("catalog", BUILTIN_CATALOG), **kwargs)
    assert isinstance(decision, RouteDecision), decision
    return decision


def rejected(text: str = SIMPLE, **kwargs: Any) -> Rejection:
    fields = kwargs.pop("fields", {})
    decision = decide(request(text, **fields), "r-1", kwargs.pop("catalog", BUILTIN_CATALOG), **kwargs)
    assert isinstance(decision, Rejection), decision
    return decision


def advice(route: str, model: str, demote: bool = True, minutes: int = 0, **fields: Any) -> RouteAdvice:
    return RouteAdvice.model_validate(
        {
            "route": route,
            "model": model,
            "demote": demote,
            "satisfaction": -0.62 if demote else 0.4,
            "samples": 40,
            "reason": "ratings",
            "ts": NOW + timedelta(minutes=minutes),
            **fields,
        }
    )


def with_routing(**routing: Any) -> Catalog:
    return BUILTIN_CATALOG.model_copy(update={"routing": RoutingConfig.model_validate(routing)})


# --- token estimate -------------------------------------------------------------------------------


def test_token_estimate_is_a_token_per_four_characters_rounded_up() -> None:
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("abc") == 1
    assert estimate_text_tokens("abcde") == 2
    req = request("x" * 40, context=[{"id": "d", "text": "y" * 8}])
    assert estimate_prompt_tokens(req) == 10 + 2


# --- features -------------------------------------------------------------------------------------


def test_features_detect_what_makes_a_prompt_hard() -> None:
    assert extract(request(MATH)).math
    assert extract(request(CODE)).code
    assert extract(request(HARD)).reasoning_cues >= 2
    assert extract(request(HARD)).constraints >= 2
    simple = extract(request(SIMPLE))
    assert simple.simple_cue and not (simple.code or simple.math or simple.reasoning_cues)
    assert extract(request(SIMPLE, context=[{"id": "d", "text": "Paris is..."}])).has_context
    assert extract(request(SIMPLE, response_format={"type": "json_object"})).json_requested == 1
    schema = {"type": "json_schema", "json_schema": {"type": "object"}}
    assert extract(request(SIMPLE, response_format=schema)).json_requested == 2


def test_earlier_user_turns_count() -> None:
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and?"},
    ]
    req = Request.model_validate({"correlation_id": "c", "tenant": "t", "messages": turns})
    assert extract(req).earlier_turns == 1


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("What is the capital of France?", "en"),
        ("¿Cuál es la capital de la Argentina y por qué?", "es"),
        ("Quelle est la capitale de la Belgique et pourquoi est-elle là ?", "fr"),
        ("Wie heißt die Hauptstadt von Österreich und was ist das?", "de"),
        ("日本の首都はどこですか？", "other"),
    ],
)
def test_language(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_tiers_follow_the_thresholds_and_floors_only_raise() -> None:
    rules = RoutingConfig()
    assert assess(extract(request(SIMPLE)), rules).tier == "small"
    assert assess(extract(request(MATH)), rules).tier == "medium"
    assert assess(extract(request(HARD)), rules).tier == "large"
    floored = RoutingConfig.model_validate({"floors": {"context": "large"}})
    with_context = extract(request(SIMPLE, context=[{"id": "d", "text": "Paris."}]))
    assessment = assess(with_context, floored)
    assert assessment.tier == "large" and "floor context -> large" in assessment.explain()
    assert assess(
        extract(request(HARD)), RoutingConfig.model_validate({"floors": {"code": "small"}})
    ).tier == ("large")


# --- decisions ------------------------------------------------------------------------------------


def test_simple_prompt_takes_the_cheapest_model_with_the_others_as_fallbacks() -> None:
    decision = decided(SIMPLE)
    assert (decision.model, decision.route, decision.tier) == ("sim-small", "simple", "small")
    assert decision.fallbacks == ["sim-medium", "sim-large"]
    assert decision.baseline_model == "sim-large"
    assert decision.arm is None
    assert decision.estimated_prompt_tokens == estimate_prompt_tokens(request(SIMPLE))
    assert decision.reason.startswith("auto: score ") and "route 'simple' -> sim-small" in decision.reason


def test_math_goes_to_medium_and_hard_multi_part_work_to_large() -> None:
    math = decided(MATH)
    assert (math.model, math.route, math.fallbacks) == ("sim-medium", "standard", ["sim-large"])
    assert "math +2.50" in math.reason
    hard = decided(HARD)
    assert (hard.model, hard.route, hard.fallbacks, hard.baseline_model) == (
        "sim-large",
        "complex",
        [],
        "sim-large",
    )


def test_a_prompt_too_long_for_the_small_model_skips_it_and_says_why() -> None:
    decision = decided("word " * 7000 + "What is it?", fields={"max_tokens": 256})
    assert decision.model != "sim-small"
    assert "sim-small" not in decision.fallbacks
    long = decided("What is it?", fields={"context": [{"id": "d", "text": "z" * 36_000}], "max_tokens": 256})
    assert long.model == "sim-medium" and "skipped sim-small (context window 8192 <" in long.reason


def test_long_context_and_json_mode_need_the_capability() -> None:
    no_json = Catalog(
        default="plain",
        models=(
            ModelEntry(
                name="plain",
                base_url="http://a/v1",
                tier="small",
                input_price_per_1k=0.1,
                output_price_per_1k=0.1,
                capabilities=frozenset(),
            ),
            ModelEntry(
                name="jsonic",
                base_url="http://b/v1",
                tier="small",
                input_price_per_1k=0.2,
                output_price_per_1k=0.2,
                context_window=200_000,
            ),
        ),
    )
    assert decided(catalog=no_json).model == "plain"
    json_decision = decided(catalog=no_json, fields={"response_format": {"type": "json_object"}})
    assert json_decision.model == "jsonic" and "skipped plain (no json_mode)" in json_decision.reason
    nothing = rejected(catalog=no_json, fields={"context": [{"id": "d", "text": "z" * 80_000}]})
    assert nothing.code is ErrorCode.INVALID_REQUEST and "no long_context" in nothing.message


def test_no_model_large_enough_is_an_invalid_request_naming_the_token_counts() -> None:
    rejection = rejected(fields={"context": [{"id": "d", "text": "z" * 600_000}]})
    assert rejection.code is ErrorCode.INVALID_REQUEST
    assert rejection.message.startswith("messages: no model on route")
    assert "150008 prompt tokens" in rejection.message


def test_named_model_must_exist_and_fit() -> None:
    decision = decided(fields={"model": "sim-medium"})
    assert (decision.model, decision.route, decision.baseline_model) == (
        "sim-medium",
        "requested",
        "sim-medium",
    )
    assert decision.fallbacks == [] and decision.reason == "requested by client"
    too_long = rejected(fields={"model": "sim-small", "context": [{"id": "d", "text": "z" * 40_000}]})
    assert too_long.code is ErrorCode.INVALID_REQUEST and too_long.message.startswith(
        "model: sim-small cannot"
    )


# --- tenant policy --------------------------------------------------------------------------------


def tenant(**access: Any) -> TenantConfig:
    return TenantConfig(access=AccessRules.model_validate(access))


def test_allowed_models_restrict_auto() -> None:
    decision = decided(tenant=tenant(allowed_models=["auto", "sim-medium", "sim-large"]))
    assert decision.model == "sim-medium" and decision.baseline_model == "sim-large"
    assert "skipped sim-small (not in access.allowed_models)" in decision.reason
    assert decided(tenant=tenant(allowed_models=["auto"])).model == "sim-small"  # 'auto' alone: all models


def test_only_disallowed_fitting_models_is_a_policy_violation_naming_the_field() -> None:
    policy = tenant(allowed_models=["auto", "sim-small"])
    rejection = rejected(fields={"context": [{"id": "d", "text": "z" * 40_000}]}, tenant=policy)
    assert rejection.code is ErrorCode.POLICY_VIOLATION
    assert rejection.message.startswith("access.allowed_models:")


def test_cost_cap_skips_pricier_models_and_rejects_when_none_is_cheap_enough() -> None:
    # worst case of MATH (42 prompt tokens + max_tokens 256): sim-medium $0.00081, sim-large $0.00405
    capped = tenant(max_cost_per_request_usd=0.001)
    decision = decided(MATH, tenant=capped)
    assert decision.model == "sim-medium" and decision.fallbacks == []
    assert decision.baseline_model == "sim-medium"
    rejection = rejected(MATH, tenant=tenant(max_cost_per_request_usd=0.0001))
    assert rejection.code is ErrorCode.BUDGET_EXCEEDED
    assert rejection.message.startswith("access.max_cost_per_request_usd:")
    assert "the cheapest fitting model, sim-medium, may cost $0.00081" in rejection.message
    named = rejected(fields={"model": "sim-large"}, tenant=tenant(max_cost_per_request_usd=0.0001))
    assert named.code is ErrorCode.BUDGET_EXCEEDED and "sim-large may cost up to" in named.message


# --- feedback advice ------------------------------------------------------------------------------


def test_a_demoted_model_is_passed_over_for_the_next_candidate_and_the_reason_says_so() -> None:
    book = AdviceBook()
    assert book.update(advice("simple", "sim-small"))
    decision = decided(advice=book)
    assert decision.model == "sim-medium"
    assert decision.fallbacks == ["sim-large", "sim-small"]  # still there as a last resort
    assert (
        "feedback: sim-small demoted on route 'simple' (satisfaction -0.62 over 40 ratings) -> sim-medium"
        in decision.reason
    )
    assert decided(MATH, advice=book).model == "sim-medium"  # advice is per route


def test_newest_advice_wins_and_stale_advice_is_ignored() -> None:
    book = AdviceBook()
    book.update(advice("simple", "sim-small", minutes=5))
    assert not book.update(advice("simple", "sim-small", demote=False, minutes=1))
    assert decided(advice=book).model == "sim-medium"
    assert book.update(advice("simple", "sim-small", demote=False, minutes=10))
    assert decided(advice=book).model == "sim-small"
    assert len(book) == 1 and advice_key("simple", "sim-small") == "simple|sim-small"


def test_when_every_candidate_is_demoted_the_first_still_serves() -> None:
    book = AdviceBook()
    for model in ("sim-small", "sim-medium", "sim-large"):
        book.update(advice("simple", model))
    decision = decided(advice=book)
    assert decision.model == "sim-small" and "anyway (no other candidate)" in decision.reason


def test_unavailable_models_are_tried_last() -> None:
    decision = decided(unavailable={"sim-small"})
    assert decision.model == "sim-medium" and decision.fallbacks == ["sim-large", "sim-small"]
    assert "health: sim-small unavailable -> sim-medium" in decision.reason


# --- experiments ----------------------------------------------------------------------------------


def experiment_catalog(fraction: float = 0.25, challenger: str = "sim-medium") -> Catalog:
    return with_routing(experiments=[{"route": "simple", "challenger": challenger, "fraction": fraction}])


def test_experiment_arm_is_fixed_by_the_request_id() -> None:
    catalog = experiment_catalog()
    arms = [decided(request_id=f"req-{i}", catalog=catalog).arm for i in range(2000)]
    again = [decided(request_id=f"req-{i}", catalog=catalog).arm for i in range(2000)]
    assert arms == again
    share = arms.count("challenger") / len(arms)
    assert 0.2 < share < 0.3
    assert set(arms) == {"control", "challenger"}
    assert arm_draw("req-1", "simple") == arm_draw("req-1", "simple") != arm_draw("req-1", "complex")


def test_challenger_arm_serves_the_challenger_with_the_control_chain_as_fallback() -> None:
    catalog = experiment_catalog(fraction=1.0)
    decision = decided(catalog=catalog)
    assert (decision.arm, decision.model) == ("challenger", "sim-medium")
    assert decision.fallbacks == ["sim-small", "sim-large"]
    assert "experiment: challenger arm (100% of route) -> sim-medium" in decision.reason
    assert decided(MATH, catalog=catalog).arm is None  # other routes are not in the experiment


def test_an_ineligible_or_demoted_challenger_falls_back_to_control() -> None:
    catalog = experiment_catalog(fraction=1.0)
    book = AdviceBook()
    book.update(advice("simple", "sim-medium"))
    decision = decided(catalog=catalog, advice=book)
    assert (decision.arm, decision.model) == ("control", "sim-small")
    assert "challenger sim-medium not eligible" in decision.reason


# --- catalog rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ({"routes": [{"name": "a", "tier": "small", "candidates": ["ghost"]}]}, "unknown model(s) ghost"),
        (
            {"experiments": [{"route": "nope", "challenger": "sim-large", "fraction": 0.1}]},
            "unknown route(s) nope",
        ),
        (
            {"experiments": [{"route": "simple", "challenger": "ghost", "fraction": 0.1}]},
            "unknown model 'ghost'",
        ),
        ({"experiments": [{"route": "simple", "challenger": "sim-large", "fraction": 1.5}]}, "fraction"),
        ({"routes": [{"name": "a", "tier": "small"}, {"name": "b", "tier": "small"}]}, "one route per tier"),
        ({"thresholds": {"medium": 5, "large": 1}}, "must not be below medium"),
        ({"floors": {"vibes": "large"}}, "unknown feature(s) vibes"),
        ({"weights": {"cod": 1.0}}, "cod"),
    ],
)
def test_invalid_routing_rules_are_rejected_with_a_clear_message(
    tmp_path: Path, routing: dict[str, Any], message: str
) -> None:
    data = {
        "default": "sim-small",
        "models": [m.model_dump(mode="json", exclude_none=True) for m in BUILTIN_CATALOG.models],
    }
    data["routing"] = routing
    path = tmp_path / "models.toml"
    path.write_text(tomli_w.dumps(data))
    with pytest.raises(CatalogError) as info:
        load_catalog(Settings(models=path))
    assert message in str(info.value) and str(path) in str(info.value)


def test_configured_candidates_keep_their_order() -> None:
    catalog = with_routing(
        routes=[
            {"name": "cheap", "tier": "small", "candidates": ["sim-medium", "sim-small"]},
            {"name": "big", "tier": "large"},
        ]
    )
    decision = decided(catalog=catalog)
    assert (decision.route, decision.model, decision.fallbacks) == ("cheap", "sim-medium", ["sim-small"])
    assert decided(MATH, catalog=catalog).route == "big"  # no medium route: the next one up


def test_example_catalog_loads() -> None:
    catalog = load_catalog(Settings(models=ROOT / "models.example.toml"))
    assert {entry.kind for entry in catalog.models} == {"openai", "anthropic"}
    assert catalog.routing.experiments


def test_routing_savings_is_baseline_cost_minus_actual_cost() -> None:
    saved = BUILTIN_CATALOG.routing_savings("sim-large", "sim-small", 1000, 500)
    assert saved == pytest.approx((5 + 7.5) / 1000 * 1000 / 1000 * 1 - (0.2 + 0.3) / 1000 * 1)
    assert BUILTIN_CATALOG.routing_savings("sim-small", "sim-large", 1000, 500) == pytest.approx(-saved)
    assert BUILTIN_CATALOG.routing_savings(None, "sim-small", 1000, 500) == 0.0
    assert BUILTIN_CATALOG.routing_savings("ghost", "sim-small", 1000, 500) == 0.0


# --- the stage ------------------------------------------------------------------------------------


def envelope(text: str, request_id: str = "req-1", **fields: Any) -> Envelope:
    return Envelope(
        request_id=request_id,
        correlation_id="c-1",
        tenant="acme",
        reply_to="sluice.responses",
        received_at=NOW,
        deadline_at=NOW + timedelta(seconds=30),
        request=request(text, **fields),
    )


def test_route_stage_records_the_decision_in_the_event() -> None:
    outcome = route(envelope(MATH), experiment_catalog(fraction=1.0), NOW)
    assert outcome.forward is not None and outcome.forward.route is not None
    attributes = outcome.event.attributes
    assert attributes["route_reason"] == outcome.forward.route.reason
    assert (attributes["route"], attributes["tier"], attributes["baseline_model"]) == (
        "standard",
        "medium",
        "sim-large",
    )
    assert attributes["fallbacks"] == "sim-large" and "arm" not in attributes
    simple = route(envelope(SIMPLE), experiment_catalog(fraction=1.0), NOW)
    assert simple.event.attributes["arm"] == "challenger"


def test_route_stage_rejects_with_the_routers_message() -> None:
    outcome = route(envelope(SIMPLE), BUILTIN_CATALOG, NOW, tenant=tenant(max_cost_per_request_usd=1e-9))
    assert outcome.forward is None and outcome.response is not None
    assert outcome.response.status is Status.REJECTED
    assert outcome.response.error is not None
    assert outcome.response.error.code is ErrorCode.BUDGET_EXCEEDED
    assert outcome.response.error.stage is Stage.ROUTE
    assert "access.max_cost_per_request_usd" in outcome.response.error.message


# --- the advice topic's records -------------------------------------------------------------------


def test_advice_records_fold_into_the_book() -> None:
    book = AdviceBook()
    key = b"simple|sim-small"
    assert apply_record(book, key, encode(advice("simple", "sim-small", minutes=5))) == "applied"
    assert apply_record(book, key, encode(advice("simple", "sim-small", demote=False))) == (
        "skipped: older than known advice"
    )
    assert book.demotion("simple", "sim-small") is not None
    assert apply_record(book, key, b"{not json").startswith("skipped: not a valid RouteAdvice")
    assert apply_record(book, key, b'{"route": "simple"}').startswith("skipped: not a valid RouteAdvice")
    assert apply_record(book, key, None) == "withdrawn"
    assert book.get("simple", "sim-small") is None
    assert apply_record(book, key, None) == "skipped: nothing to withdraw"
    assert apply_record(book, None, None) == "skipped: tombstone without a key"
