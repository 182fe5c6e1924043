"""route: decide which model answers. `auto` goes through the router (request features ->
complexity tier -> cheapest fitting model of that tier's route, within the tenant's policy and
the feedback loop's advice); a named model must exist and fit, else the request is rejected
before any money is spent."""

from __future__ import annotations

import time
from collections.abc import Collection
from datetime import datetime

from agents.routing.advice import AdviceBook
from agents.routing.router import Rejection, decide
from schemas import Envelope, Stage, Status
from sluice.outcome import Outcome, fail, forward
from sluice.providers.catalog import Catalog
from sluice.tenants import DEFAULT_TENANT, TenantConfig

STAGE = Stage.ROUTE


def route(
    envelope: Envelope,
    catalog: Catalog,
    now: datetime,
    tenant: TenantConfig = DEFAULT_TENANT,
    advice: AdviceBook | None = None,
    unavailable: Collection[str] = (),
) -> Outcome:
    started = time.perf_counter()
    decision = decide(envelope.request, envelope.request_id, catalog, tenant, advice, unavailable)
    if isinstance(decision, Rejection):
        return fail(
            envelope,
            STAGE,
            Status.REJECTED,
            decision.code,
            decision.message,
            now=now,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
    routed = envelope.model_copy(update={"route": decision})
    attributes = {
        "route_reason": decision.reason,
        "route": decision.route,
        "tier": decision.tier or "",
        "estimated_prompt_tokens": str(decision.estimated_prompt_tokens),
        "baseline_model": decision.baseline_model or "",
        "fallbacks": ",".join(decision.fallbacks),
    }
    if decision.arm is not None:
        attributes["arm"] = decision.arm
    return forward(
        routed,
        STAGE,
        now=now,
        duration_ms=(time.perf_counter() - started) * 1000,
        model=decision.model,
        attributes=attributes,
    )
