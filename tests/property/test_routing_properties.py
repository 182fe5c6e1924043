"""The router reads outside input (any prompt text, context, response format): whatever it is,
the router returns a decision over catalog models or a typed rejection, never raises, and decides
the same way twice."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.routing.advice import AdviceBook
from agents.routing.router import Rejection, decide
from schemas import Request, RouteAdvice, RouteDecision
from sluice.providers.catalog import BUILTIN_CATALOG, TIER_RANK
from sluice.tenants import AccessRules, TenantConfig

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = [entry.name for entry in BUILTIN_CATALOG.models]

texts = st.text(min_size=1, max_size=3000) | st.sampled_from(
    [
        "def f(x): return x",
        "Solve 3x + 4 = 10 step by step",
        "¿Por qué?",
        "```\n}\n```",
        "日本語",
        "\x00\u202e",
    ]
)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": texts}),
    min_size=1,
    max_size=6,
).map(lambda ms: [*ms, {"role": "user", "content": "?"}])
formats = st.none() | st.fixed_dictionaries(
    {
        "type": st.sampled_from(["text", "json_object", "json_schema"]),
        "json_schema": st.none() | st.just({"type": "object"}),
    }
)
tenants = st.builds(
    lambda allowed, cap: TenantConfig(
        access=AccessRules(allowed_models=allowed, max_cost_per_request_usd=cap)
    ),
    st.lists(st.sampled_from(["auto", *NAMES]), max_size=3).map(tuple),
    st.none() | st.floats(min_value=1e-7, max_value=1.0),
)


@FUZZ
@given(
    messages=messages,
    context=st.lists(st.builds(lambda t: {"id": "d", "text": t}, texts), max_size=3),
    response_format=formats,
    max_tokens=st.integers(min_value=1, max_value=8000),
    model=st.sampled_from(["auto", "auto", *NAMES]),
    tenant=tenants,
    request_id=st.text(min_size=1, max_size=40),
    demoted=st.lists(st.sampled_from(NAMES), max_size=3),
)
def test_router_always_decides_or_rejects(
    messages: list[dict[str, str]],
    context: list[dict[str, str]],
    response_format: dict[str, Any] | None,
    max_tokens: int,
    model: str,
    tenant: TenantConfig,
    request_id: str,
    demoted: list[str],
) -> None:
    request = Request.model_validate(
        {
            "correlation_id": "c",
            "tenant": "t",
            "messages": messages,
            "context": context,
            "response_format": response_format,
            "max_tokens": max_tokens,
            "model": model,
        }
    )
    book = AdviceBook()
    for name in demoted:
        for route in ("simple", "standard", "complex"):
            book.update(
                RouteAdvice.model_validate(
                    {
                        "route": route,
                        "model": name,
                        "demote": True,
                        "satisfaction": -1,
                        "samples": 1,
                        "reason": "fuzz",
                        "ts": "2026-01-01T00:00:00Z",
                    }
                )
            )
    decision = decide(request, request_id, BUILTIN_CATALOG, tenant, book)
    assert decide(request, request_id, BUILTIN_CATALOG, tenant, book) == decision
    if isinstance(decision, Rejection):
        assert decision.message.split(":")[0] in {
            "model",
            "messages",
            "access.allowed_models",
            "access.max_cost_per_request_usd",
        }
        return
    assert isinstance(decision, RouteDecision)
    chosen = BUILTIN_CATALOG.get(decision.model)
    assert chosen is not None and decision.model not in decision.fallbacks
    assert chosen.context_window >= decision.estimated_prompt_tokens + max_tokens
    if model != "auto":
        assert decision.model == model
    else:
        assert decision.tier in TIER_RANK and decision.baseline_model in NAMES
        allowed = {name for name in tenant.access.allowed_models if name in NAMES}
        assert not allowed or {decision.model, *decision.fallbacks} <= allowed
