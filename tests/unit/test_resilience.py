"""Backoff, Retry-After parsing, the circuit breaker's state machine and the per-model gates."""

from __future__ import annotations

import asyncio
import random

import pytest

from sluice.providers.calls import retry_after_s, status_error
from sluice.providers.resilience import (
    BreakerPolicy,
    Breakers,
    BreakerState,
    CircuitBreaker,
    ModelGates,
    backoff_s,
    parse_retry_after,
)

POLICY = BreakerPolicy(
    window_s=10.0, min_calls=4, failure_rate=0.5, slow_call_s=2.0, open_s=5.0, half_open_probes=2
)


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    for retry, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (8, 2.0)]:
        draws = [backoff_s(retry, 0.1, 2.0, rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.9  # the whole range is used, not a fixed delay
        assert min(draws) < ceiling * 0.1


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        (" 2 ", 2.0),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),  # 10 s after `now` below
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past
        ("", None),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_seconds_or_http_date(header: str | None, expected: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now) == (pytest.approx(expected) if expected is not None else None)


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after_s({"retry-after": "1", "retry-after-ms": "250"}, 0.0) == pytest.approx(0.25)
    assert retry_after_s({"retry-after": "2", "retry-after-ms": "x"}, 0.0) == 2.0
    assert retry_after_s({}, 0.0) is None


@pytest.mark.parametrize(
    ("status", "retryable"), [(429, True), (500, True), (503, True), (529, True), (400, False), (404, False)]
)
def test_status_errors_retryable_only_for_429_and_5xx(status: int, retryable: bool) -> None:
    error = status_error("m", status, "boom", {"retry-after": "1"})
    assert error.retryable is retryable
    assert error.model_fault is retryable
    assert error.retry_after_s == 1.0
    assert f"HTTP {status}" in error.message


def fail(breaker: CircuitBreaker, now: float, times: int = 1) -> None:
    for _ in range(times):
        assert breaker.allow(now, 1000 + now)
        breaker.record(now, 1000 + now, ok=False, latency_s=0.01)


def succeed(breaker: CircuitBreaker, now: float, times: int = 1, latency_s: float = 0.01) -> None:
    for _ in range(times):
        assert breaker.allow(now, 1000 + now)
        breaker.record(now, 1000 + now, ok=True, latency_s=latency_s)


def test_breaker_opens_on_the_failure_rate_once_enough_calls_are_seen() -> None:
    breaker = CircuitBreaker("m", POLICY)
    fail(breaker, 0.0, 3)
    assert breaker.state is BreakerState.CLOSED  # 3 < min_calls
    succeed(breaker, 0.1)
    assert breaker.state is BreakerState.OPEN  # 3 of 4 bad >= 50 %
    assert not breaker.allow(0.2, 1000.2)
    [change] = breaker.transitions
    assert (change.previous, change.state, change.calls, change.bad_calls) == (
        BreakerState.CLOSED,
        BreakerState.OPEN,
        4,
        3,
    )
    assert change.at_s == pytest.approx(1000.1)


def test_breaker_stays_closed_below_the_failure_rate() -> None:
    breaker = CircuitBreaker("m", POLICY)
    for i in range(20):
        (fail if i % 4 == 0 else succeed)(breaker, i * 0.1)
    assert breaker.state is BreakerState.CLOSED


def test_slow_calls_count_as_bad() -> None:
    breaker = CircuitBreaker("m", POLICY)
    succeed(breaker, 0.0, 4, latency_s=3.0)
    assert breaker.state is BreakerState.OPEN


def test_old_calls_leave_the_window() -> None:
    breaker = CircuitBreaker("m", POLICY)
    fail(breaker, 0.0, 3)
    succeed(breaker, 11.0, 1)  # the failures are older than the 10 s window
    assert breaker.state is BreakerState.CLOSED
    assert breaker.counts() == (1, 0)


def test_half_open_admits_one_probe_and_closes_after_enough_successes() -> None:
    breaker = CircuitBreaker("m", POLICY)
    fail(breaker, 0.0, 4)
    assert not breaker.allow(4.9, 1004.9)
    assert breaker.allow(5.0, 1005.0)  # open time elapsed: this call is the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(5.0, 1005.0)  # one probe at a time
    breaker.record(5.1, 1005.1, ok=True, latency_s=0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    succeed(breaker, 5.2)
    assert breaker.state is BreakerState.CLOSED
    assert [t.state for t in breaker.transitions] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]
    assert breaker.counts() == (0, 0)  # a fresh window after recovery


def test_a_failed_probe_opens_again_for_another_open_period() -> None:
    breaker = CircuitBreaker("m", POLICY)
    fail(breaker, 0.0, 4)
    fail(breaker, 6.0)  # the probe fails
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(10.9, 1010.9)
    assert breaker.allow(11.0, 1011.0)
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_released_probe_frees_the_half_open_slot() -> None:
    breaker = CircuitBreaker("m", POLICY)
    fail(breaker, 0.0, 4)
    assert breaker.allow(5.0, 1005.0)
    breaker.release_probe()
    assert breaker.allow(5.1, 1005.1)


def test_breakers_are_per_model_and_drain_their_transitions_once() -> None:
    breakers = Breakers(POLICY)
    fail(breakers.of("a"), 0.0, 4)
    succeed(breakers.of("b"), 0.0, 4)
    assert breakers.of("a").state is BreakerState.OPEN
    assert breakers.of("b").state is BreakerState.CLOSED
    assert [(t.model, t.state) for t in breakers.drain()] == [("a", BreakerState.OPEN)]
    assert breakers.drain() == []


def test_open_breakers_are_unavailable_to_the_router_until_their_open_time_is_over() -> None:
    breakers = Breakers(POLICY)
    fail(breakers.of("a"), 0.0, 4)
    succeed(breakers.of("b"), 0.0, 4)
    assert breakers.unavailable(1.0) == {"a"}
    # After open_s the model is offered again, so a half-open probe can reach it.
    assert breakers.unavailable(POLICY.open_s + 0.1) == frozenset()
    assert breakers.of("a").allow(POLICY.open_s + 0.1, 1000 + POLICY.open_s)
    assert breakers.of("a").state is BreakerState.HALF_OPEN
    assert breakers.unavailable(POLICY.open_s + 0.2) == frozenset()


async def test_model_gates_bound_calls_per_model() -> None:
    gates = ModelGates({"small": 2}, default_limit=5)
    assert gates.limit("small") == 2 and gates.limit("other") == 5
    gate = gates.gate("small")
    assert gates.gate("small") is gate
    await gate.acquire()
    await gate.acquire()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await gate.acquire()
    gate.release()
    await gate.acquire()  # a released slot is free again
