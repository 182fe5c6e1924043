"""The feedback loop's newest advice per (route, model), as the router reads it.

The feedback evaluator publishes one RouteAdvice per (route, model) on the compacted
route-advice topic; every worker follows that topic into an AdviceBook (agents/routing/feed.py)
and the route stage asks it, per candidate, whether that model is demoted on that route."""

from __future__ import annotations

from schemas import RouteAdvice


def advice_key(route: str, model: str) -> str:
    """The record key on the route-advice topic: `route|model`."""
    return f"{route}|{model}"


class AdviceBook:
    """Newest advice per (route, model). Older advice (by `ts`) never replaces newer: a
    redelivered or reordered record cannot bring back a stale verdict."""

    def __init__(self) -> None:
        self._newest: dict[str, RouteAdvice] = {}

    def update(self, advice: RouteAdvice) -> bool:
        """Keep `advice` unless newer advice for its (route, model) is already known."""
        key = advice_key(advice.route, advice.model)
        known = self._newest.get(key)
        if known is not None and known.ts > advice.ts:
            return False
        self._newest[key] = advice
        return True

    def forget(self, route: str, model: str) -> bool:
        """Withdraw the advice for (route, model) (a tombstone on the compacted topic)."""
        return self._newest.pop(advice_key(route, model), None) is not None

    def get(self, route: str, model: str) -> RouteAdvice | None:
        return self._newest.get(advice_key(route, model))

    def demotion(self, route: str, model: str) -> RouteAdvice | None:
        """The advice that demotes `model` on `route`, if the newest advice does."""
        advice = self.get(route, model)
        return advice if advice is not None and advice.demote else None

    def __len__(self) -> int:
        return len(self._newest)
