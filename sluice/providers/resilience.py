"""Resilience primitives for model calls: backoff with jitter, Retry-After parsing, a circuit
breaker per model endpoint (per deployment for a replicated model), a per-model concurrency
gate, and the balancer that spreads a replicated model's calls over its deployments.

All of it is plain Python with the clock passed in, so the state machines are testable without
sleeping; the infer stage composes them (agents/infer.py).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum

from sluice.providers.catalog import Deployment, ModelEntry
from sluice.settings import Settings


def backoff_s(retry: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff before retry number `retry` (0 = first retry): a uniform
    draw in [0, min(cap, base * 2**retry)], so many clients retrying together spread out."""
    return rng.uniform(0.0, min(cap_s, base_s * (2**retry)))


def parse_retry_after(value: str | None, now_epoch_s: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent
    or unreadable. Negative waits become 0."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_epoch_s)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    """When a model's breaker opens and how it recovers (all from Settings.breaker_*)."""

    window_s: float = 5.0
    min_calls: int = 5
    failure_rate: float = 0.5
    slow_call_s: float = 30.0
    open_s: float = 5.0
    half_open_probes: int = 2

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerPolicy:
        return cls(
            window_s=settings.breaker_window_s,
            min_calls=settings.breaker_min_calls,
            failure_rate=settings.breaker_failure_rate,
            slow_call_s=settings.breaker_slow_call_s,
            open_s=settings.breaker_open_s,
            half_open_probes=settings.breaker_half_open_probes,
        )


@dataclass(frozen=True)
class Transition:
    """One breaker state change, published as an infer-stage event by the worker."""

    model: str
    previous: BreakerState
    state: BreakerState
    at_s: float  # wall clock (epoch seconds), names the transition
    calls: int  # calls in the window when it changed
    bad_calls: int
    reason: str
    deployment: str | None = None  # the replica, for a model served by several deployments


@dataclass
class CircuitBreaker:
    """Closed: calls flow and are counted in a sliding window; it opens when at least `min_calls`
    calls in the window and a `failure_rate` share of them failed or were slower than
    `slow_call_s`. Open: calls are refused for `open_s`. Half-open: one probe at a time is let
    through; `half_open_probes` successes in a row close it, any failure opens it again."""

    model: str
    policy: BreakerPolicy
    deployment: str | None = None  # one replica of a replicated model; None: the whole model
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    window: deque[tuple[float, bool]] = field(default_factory=deque)  # (monotonic time, bad)
    bad_in_window: int = 0  # kept with the window, so recording a call is O(1)
    probe_in_flight: bool = False
    probe_successes: int = 0
    transitions: list[Transition] = field(default_factory=list)

    def allow(self, now: float, wall: float) -> bool:
        """May a call go to this model now? A half-open breaker admits one probe at a time."""
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.policy.open_s:
            self._move(BreakerState.HALF_OPEN, wall, "open time elapsed; probing")
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN and not self.probe_in_flight:
            self.probe_in_flight = True
            return True
        return False

    def record(self, now: float, wall: float, ok: bool, latency_s: float) -> None:
        """The result of a call `allow` admitted."""
        bad = not ok or latency_s > self.policy.slow_call_s
        if self.state is BreakerState.HALF_OPEN:
            self.probe_in_flight = False
            if bad:
                self._open(now, wall, "probe failed" if not ok else "probe too slow")
                return
            self.probe_successes += 1
            if self.probe_successes >= self.policy.half_open_probes:
                self.window.clear()
                self.bad_in_window = 0
                self._move(BreakerState.CLOSED, wall, f"{self.probe_successes} probes succeeded")
            return
        if self.state is BreakerState.OPEN:
            return  # a call admitted before it opened; the window restarts on close anyway
        self.window.append((now, bad))
        self.bad_in_window += bad
        self._trim(now)
        calls, bad_calls = self.counts()
        if calls >= self.policy.min_calls and bad_calls >= self.policy.failure_rate * calls:
            self._open(now, wall, f"{bad_calls}/{calls} bad calls in {self.policy.window_s:g}s")

    def release_probe(self) -> None:
        """An admitted probe that never reached the model (deadline, cancellation)."""
        if self.state is BreakerState.HALF_OPEN:
            self.probe_in_flight = False

    def counts(self) -> tuple[int, int]:
        """(calls, bad calls) in the window as of the last record."""
        return len(self.window), self.bad_in_window

    def _trim(self, now: float) -> None:
        while self.window and self.window[0][0] < now - self.policy.window_s:
            _, bad = self.window.popleft()
            self.bad_in_window -= bad

    def _open(self, now: float, wall: float, reason: str) -> None:
        self.opened_at = now
        self._move(BreakerState.OPEN, wall, reason)

    def _move(self, state: BreakerState, wall: float, reason: str) -> None:
        calls, bad_calls = self.counts()
        self.transitions.append(
            Transition(self.model, self.state, state, wall, calls, bad_calls, reason, self.deployment)
        )
        self.state = state
        self.probe_in_flight = False
        self.probe_successes = 0


class Breakers:
    """One breaker per model endpoint in this worker, created on first use: per model, or per
    deployment for a model served by several (`replicas`: model -> number of deployments)."""

    def __init__(self, policy: BreakerPolicy, replicas: Mapping[str, int] | None = None) -> None:
        self.policy = policy
        self.replicas = dict(replicas or {})
        self._breakers: dict[tuple[str, str | None], CircuitBreaker] = {}

    def of(self, model: str, deployment: str | None = None) -> CircuitBreaker:
        breaker = self._breakers.get((model, deployment))
        if breaker is None:
            breaker = self._breakers[model, deployment] = CircuitBreaker(model, self.policy, deployment)
        return breaker

    def unavailable(self, now: float) -> frozenset[str]:
        """Models the router should pass over: every endpoint's breaker open and its open time
        not yet over (a replicated model stays up while any replica is). Once it is over the
        model is offered again, so a half-open probe can reach it and close it."""
        open_endpoints: dict[str, int] = {}
        for (model, _), breaker in self._breakers.items():
            if breaker.state is BreakerState.OPEN and now - breaker.opened_at < self.policy.open_s:
                open_endpoints[model] = open_endpoints.get(model, 0) + 1
        return frozenset(m for m, n in open_endpoints.items() if n >= self.replicas.get(m, 1))

    def drain(self) -> list[Transition]:
        """State changes since the last drain, oldest first (the worker publishes them)."""
        changes: list[Transition] = []
        for breaker in self._breakers.values():
            changes.extend(breaker.transitions)
            breaker.transitions.clear()
        return sorted(changes, key=lambda t: t.at_s)


class ModelGates:
    """A semaphore per model sized by the catalog's `max_concurrency`: calls in flight to one
    model in this worker never exceed it. The infer agent waits on the routed model's gate
    before it pulls the next record, so a full model pauses consumption (backpressure)."""

    def __init__(self, limits: dict[str, int], default_limit: int = 256) -> None:
        self._limits = dict(limits)
        self._default = default_limit
        self._gates: dict[str, asyncio.Semaphore] = {}

    def gate(self, model: str) -> asyncio.Semaphore:
        gate = self._gates.get(model)
        if gate is None:
            gate = self._gates[model] = asyncio.Semaphore(self._limits.get(model, self._default))
        return gate

    def limit(self, model: str) -> int:
        return self._limits.get(model, self._default)


class Balancer:
    """Spreads a replicated model's calls over its deployments: fewest calls in flight per unit
    of weight first (a slow replica holds its calls longer, so it is offered fewer), ties broken
    by fewest calls started per unit of weight. Those that already failed this request go last.
    A deployment at its own `max_concurrency` takes no call until one of its calls ends
    (`full`, `freed`). Counts are per worker, like the gates."""

    def __init__(self) -> None:
        self._in_flight: dict[tuple[str, str], int] = {}
        self._started: dict[tuple[str, str], int] = {}
        self._freed: dict[str, asyncio.Event] = {}

    def full(self, entry: ModelEntry, deployment: Deployment) -> bool:
        limit = deployment.max_concurrency or entry.max_concurrency
        return self._in_flight.get((entry.name, deployment.label), 0) >= limit

    async def freed(self, model: str, timeout_s: float) -> bool:
        """Wait until a call to one of this model's deployments ends; False on timeout."""
        event = self._freed.setdefault(model, asyncio.Event())
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await event.wait()
        except TimeoutError:
            return False
        return True

    def ranked(self, entry: ModelEntry, avoid: frozenset[str] = frozenset()) -> list[Deployment]:
        """The model's deployments in the order to try them for the next call."""

        def rank(deployment: Deployment) -> tuple[bool, bool, float, float]:
            key = (entry.name, deployment.label)
            in_flight = self._in_flight.get(key, 0)
            limit = deployment.max_concurrency or entry.max_concurrency
            return (
                deployment.label in avoid,
                in_flight >= limit,
                in_flight / deployment.weight,
                self._started.get(key, 0) / deployment.weight,
            )

        return sorted(entry.replicas, key=rank)

    def in_flight(self, model: str, deployment: str) -> int:
        return self._in_flight.get((model, deployment), 0)

    def started(self, model: str, deployment: str) -> int:
        return self._started.get((model, deployment), 0)

    @contextmanager
    def hold(self, model: str, deployment: str) -> Iterator[None]:
        """Count one call to this deployment as in flight for the duration of the block."""
        key = (model, deployment)
        self._started[key] = self._started.get(key, 0) + 1
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield
        finally:
            self._in_flight[key] -= 1
            event = self._freed.pop(model, None)
            if event is not None:
                event.set()  # wakes every waiter; each looks again for a free deployment
