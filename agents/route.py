"""route: decide which model answers. `auto` takes the catalog's default; a named model must
exist in the catalog, else the request is rejected before any money is spent."""

from __future__ import annotations

import time
from datetime import datetime

from schemas import Envelope, ErrorCode, RouteDecision, Stage, Status
from sluice.outcome import Outcome, fail, forward
from sluice.providers.catalog import Catalog

STAGE = Stage.ROUTE


def route(envelope: Envelope, catalog: Catalog, now: datetime) -> Outcome:
    started = time.perf_counter()
    requested = envelope.request.model
    if requested == "auto":
        entry = catalog.get(catalog.default)
        reason = "auto: catalog default"
    else:
        entry = catalog.get(requested)
        reason = "requested by client"
    if entry is None:
        known = ", ".join(model.name for model in catalog.models)
        return fail(
            envelope,
            STAGE,
            Status.REJECTED,
            ErrorCode.INVALID_REQUEST,
            f"model: unknown model {requested!r}; known models: auto, {known}",
            now=now,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
    decision = RouteDecision(model=entry.name, reason=reason, provider_kind=entry.kind)
    routed = envelope.model_copy(update={"route": decision})
    return forward(
        routed,
        STAGE,
        now=now,
        duration_ms=(time.perf_counter() - started) * 1000,
        model=entry.name,
        attributes={"route_reason": reason},
    )
