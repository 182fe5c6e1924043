"""Cost accounting for one model call: what it cost, and what routing saved."""

from __future__ import annotations

from sluice.providers.catalog import Catalog


def routing_savings_usd(
    catalog: Catalog,
    baseline_model: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    actual_usd: float,
) -> float:
    """The same usage at the route's baseline model's prices minus what was actually paid; 0
    without a baseline (or one the catalog no longer has). Negative when a fallback cost more."""
    if baseline_model is None:
        return 0.0
    baseline = catalog.get(baseline_model)
    if baseline is None:
        return 0.0
    return baseline.cost_usd(prompt_tokens, completion_tokens) - actual_usd
