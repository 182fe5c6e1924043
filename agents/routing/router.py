"""The router's decision, as a pure function: request, catalog, tenant policy, feedback advice
and the request id in; a RouteDecision (model, fallbacks, arm, baseline, reason) or a
Rejection out. Same inputs, same decision: a redelivered request takes the same path."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass

from agents.routing.advice import AdviceBook
from agents.routing.features import assess, extract
from schemas import ErrorCode, Request, RouteDecision
from sluice.providers.catalog import Catalog, ModelEntry, RouteRule
from sluice.tenants import DEFAULT_TENANT, TenantConfig
from sluice.tokens import estimate_prompt_tokens

REQUESTED_ROUTE = "requested"


@dataclass(frozen=True)
class Rejection:
    """Why no model may serve this request; the message names the field to change."""

    code: ErrorCode
    message: str


@dataclass(frozen=True)
class Need:
    """What a model must offer to serve this request."""

    prompt_tokens: int
    max_tokens: int
    json_mode: bool
    long_context: bool
    tools: bool = False

    def misfit(self, entry: ModelEntry) -> str | None:
        """Why `entry` cannot serve the request at all (None: it can)."""
        total = self.prompt_tokens + self.max_tokens
        if entry.context_window < total:
            return f"context window {entry.context_window} < {total} tokens"
        if self.json_mode and "json_mode" not in entry.capabilities:
            return "no json_mode"
        if self.long_context and "long_context" not in entry.capabilities:
            return "no long_context"
        if self.tools and "tools" not in entry.capabilities:
            return "no tools"
        return None

    def worst_cost(self, entry: ModelEntry) -> float:
        """Cost if the answer uses every one of max_tokens: what a cost cap must allow."""
        return entry.cost_usd(self.prompt_tokens, self.max_tokens)


def arm_draw(request_id: str, route: str) -> float:
    """A number in [0, 1) fixed by (request_id, route): the experiment arm never changes on redelivery."""
    digest = hashlib.sha256(f"{request_id}|{route}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _need(request: Request, catalog: Catalog) -> Need:
    tokens = estimate_prompt_tokens(request)
    return Need(
        prompt_tokens=tokens,
        max_tokens=request.max_tokens,
        json_mode=request.response_format is not None and request.response_format.type != "text",
        long_context=tokens >= catalog.routing.long_context_tokens,
        # tools offered, or a conversation that already holds tool calls and results
        tools=bool(request.tools) or any(m.role == "tool" or m.tool_calls for m in request.messages),
    )


def _allowed(tenant: TenantConfig, catalog: Catalog) -> frozenset[str] | None:
    """The catalog models the tenant may be routed to (None: all). `auto` alone allows all."""
    names = {entry.name for entry in catalog.models}
    listed = frozenset(name for name in tenant.access.allowed_models if name in names)
    return listed or None


def _usd(value: float) -> str:
    return f"${value:.6f}".rstrip("0").rstrip(".")


def decide(
    request: Request,
    request_id: str,
    catalog: Catalog,
    tenant: TenantConfig = DEFAULT_TENANT,
    advice: AdviceBook | None = None,
    unavailable: Collection[str] = (),
) -> RouteDecision | Rejection:
    """Route one request. `unavailable`: models known to be unhealthy right now (open breaker);
    like demoted ones they are tried only after every other fitting candidate."""
    need = _need(request, catalog)
    if request.model != "auto":
        return _requested(request.model, need, catalog, tenant)
    return _auto(request, request_id, need, catalog, tenant, advice or AdviceBook(), unavailable)


def _requested(name: str, need: Need, catalog: Catalog, tenant: TenantConfig) -> RouteDecision | Rejection:
    entry = catalog.get(name)
    if entry is None:
        known = ", ".join(model.name for model in catalog.models)
        return Rejection(
            ErrorCode.INVALID_REQUEST, f"model: unknown model {name!r}; known models: auto, {known}"
        )
    misfit = need.misfit(entry)
    if misfit is not None:
        return Rejection(ErrorCode.INVALID_REQUEST, f"model: {name} cannot serve this request ({misfit})")
    cap = tenant.access.max_cost_per_request_usd
    if cap is not None and need.worst_cost(entry) > cap:
        return Rejection(
            ErrorCode.BUDGET_EXCEEDED,
            f"access.max_cost_per_request_usd: {name} may cost up to {_usd(need.worst_cost(entry))} "
            f"for this request (estimated {need.prompt_tokens} prompt tokens + max_tokens "
            f"{need.max_tokens}), over the tenant's limit of {_usd(cap)}",
        )
    return RouteDecision(
        model=entry.name,
        reason="requested by client",
        provider_kind=entry.kind,
        route=REQUESTED_ROUTE,
        tier=entry.tier,
        estimated_prompt_tokens=need.prompt_tokens,
        baseline_model=entry.name,
    )


def _auto(
    request: Request,
    request_id: str,
    need: Need,
    catalog: Catalog,
    tenant: TenantConfig,
    advice: AdviceBook,
    unavailable: Collection[str],
) -> RouteDecision | Rejection:
    rules = catalog.routing
    assessment = assess(extract(request), rules)
    rule = rules.route_for(assessment.tier)
    candidates = catalog.candidates(rule)
    eligible, skipped, rejection = _eligible(candidates, need, catalog, tenant, rule)
    if rejection is not None:
        return rejection
    preferred = [
        e for e in eligible if e.name not in unavailable and advice.demotion(rule.name, e.name) is None
    ]
    preferred_names = {e.name for e in preferred}
    held_back = [e for e in eligible if e.name not in preferred_names]
    chain = preferred + held_back
    primary = chain[0]
    notes = [f"skipped {name} ({why})" for name, why in skipped if _ranks_before(name, primary, candidates)]
    passed_over = [e for e in held_back if not preferred or _ranks_before(e.name, primary, candidates)]
    notes += _held_back_notes(
        rule, passed_over, primary, advice, unavailable, chain_has_preferred=bool(preferred)
    )

    arm: str | None = None
    model = primary
    experiment = rules.experiment_for(rule.name)
    if experiment is not None:
        arm = "control"
        if arm_draw(request_id, rule.name) < experiment.fraction:
            challenger = next((e for e in preferred if e.name == experiment.challenger), None)
            if challenger is not None:
                arm, model = "challenger", challenger
                notes.append(
                    f"experiment: challenger arm ({experiment.fraction:.0%} of route) -> {challenger.name}"
                )
            else:
                notes.append(f"experiment: challenger {experiment.challenger} not eligible, control arm")
    fallbacks = [e.name for e in chain if e.name != model.name]
    baseline = max(eligible, key=need.worst_cost)
    fitting = f"{len(eligible)} fitting candidate{'s' if len(eligible) != 1 else ''}"
    why = f"cheapest of {fitting}" if model.name == eligible[0].name else fitting
    reason = f"auto: {assessment.explain()}; route '{rule.name}' -> {model.name} ({why})"
    if notes:
        reason += "; " + "; ".join(notes)
    return RouteDecision(
        model=model.name,
        reason=reason,
        provider_kind=model.kind,
        route=rule.name,
        tier=assessment.tier,
        fallbacks=fallbacks,
        arm=arm,
        estimated_prompt_tokens=need.prompt_tokens,
        baseline_model=baseline.name,
    )


def _ranks_before(name: str, primary: ModelEntry, candidates: tuple[ModelEntry, ...]) -> bool:
    order = [entry.name for entry in candidates]
    return order.index(name) < order.index(primary.name)


def _eligible(
    candidates: tuple[ModelEntry, ...], need: Need, catalog: Catalog, tenant: TenantConfig, rule: RouteRule
) -> tuple[list[ModelEntry], list[tuple[str, str]], Rejection | None]:
    """Candidates that fit the request and the tenant's policy, in preference order; the others
    with why; and, when none is left, the rejection that names what to change."""
    allowed = _allowed(tenant, catalog)
    cap = tenant.access.max_cost_per_request_usd
    fitting: list[ModelEntry] = []
    skipped: list[tuple[str, str]] = []
    for entry in candidates:
        misfit = need.misfit(entry)
        if misfit is None:
            fitting.append(entry)
        else:
            skipped.append((entry.name, misfit))
    if not fitting:
        details = "; ".join(f"{name}: {why}" for name, why in skipped)
        return (
            [],
            skipped,
            Rejection(
                ErrorCode.INVALID_REQUEST,
                f"messages: no model on route '{rule.name}' can serve this request (estimated "
                f"{need.prompt_tokens} prompt tokens + max_tokens {need.max_tokens}); {details}",
            ),
        )
    permitted = [e for e in fitting if allowed is None or e.name in allowed]
    permitted_names = {e.name for e in permitted}
    skipped += [(e.name, "not in access.allowed_models") for e in fitting if e.name not in permitted_names]
    if not permitted:
        return (
            [],
            skipped,
            Rejection(
                ErrorCode.POLICY_VIOLATION,
                f"access.allowed_models: none of the models that fit this request on route "
                f"'{rule.name}' ({', '.join(e.name for e in fitting)}) is allowed for this tenant",
            ),
        )
    affordable = [e for e in permitted if cap is None or need.worst_cost(e) <= cap]
    affordable_names = {e.name for e in affordable}
    skipped += [
        (e.name, f"may cost {_usd(need.worst_cost(e))} > access.max_cost_per_request_usd")
        for e in permitted
        if e.name not in affordable_names
    ]
    if not affordable:
        cheapest = min(permitted, key=need.worst_cost)
        return (
            [],
            skipped,
            Rejection(
                ErrorCode.BUDGET_EXCEEDED,
                f"access.max_cost_per_request_usd: the cheapest fitting model, {cheapest.name}, may cost "
                f"{_usd(need.worst_cost(cheapest))} for this request (estimated {need.prompt_tokens} prompt "
                f"tokens + max_tokens {need.max_tokens}), over the tenant's limit of {_usd(cap or 0.0)}; "
                f"lower max_tokens or shorten the prompt",
            ),
        )
    return affordable, skipped, None


def _held_back_notes(
    rule: RouteRule,
    held_back: list[ModelEntry],
    primary: ModelEntry,
    advice: AdviceBook,
    unavailable: Collection[str],
    *,
    chain_has_preferred: bool,
) -> list[str]:
    """route_reason notes for candidates passed over because of feedback or health."""
    notes = []
    target = primary.name if chain_has_preferred else f"{primary.name} anyway (no other candidate)"
    for entry in held_back:
        demotion = advice.demotion(rule.name, entry.name)
        if demotion is not None:
            notes.append(
                f"feedback: {entry.name} demoted on route '{rule.name}' (satisfaction "
                f"{demotion.satisfaction:+.2f} over {demotion.samples} ratings) -> {target}"
            )
        elif entry.name in unavailable:
            notes.append(f"health: {entry.name} unavailable -> {target}")
    return notes
