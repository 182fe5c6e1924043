"""infer's retries, fallbacks, breakers, cache and cost accounting, with a scripted caller and a
fake clock (no sleeping), then against the real simulator over HTTP (OpenAI and Anthropic)."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import httpx
import pytest

from agents.infer import Resilience, RetryPolicy, breaker_event, breaker_request_id, infer
from agents.inference.cache import CachedAnswer, ResponseCache, cache_eligible, cache_key
from agents.validate_response import validate_response
from schemas import Envelope, ErrorCode, Request, RouteDecision, Stage, Status
from sluice.local.simulator import SimulatorServer
from sluice.outcome import Outcome, event_id_for, utcnow
from sluice.providers.catalog import BUILTIN_CATALOG, Catalog, ModelEntry
from sluice.providers.openai_http import ChatClient, Completion, ProviderError
from sluice.providers.resilience import BreakerPolicy, Breakers, BreakerState, Transition

SMALL, MEDIUM, LARGE = "sim-small", "sim-medium", "sim-large"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


Script = list[Completion | ProviderError]


class ScriptedCaller:
    """Answers each model's calls from its script in order (the last entry repeats); every call
    takes `latency_s` of fake time, cut at the budget like a real client's timeout."""

    def __init__(self, clock: FakeClock, scripts: dict[str, Script], latency_s: float = 0.05) -> None:
        self.clock = clock
        self.scripts = scripts
        self.latency_s = latency_s
        self.calls: list[tuple[str, float]] = []
        self.contents: list[str] = []

    async def complete(self, entry: ModelEntry, payload: dict[str, Any], budget_s: float) -> Completion:
        self.calls.append((entry.name, budget_s))
        script = self.scripts[entry.name]
        result = script.pop(0) if len(script) > 1 else script[0]
        if self.latency_s > budget_s:
            self.clock.now += budget_s
            raise ProviderError(ErrorCode.TIMEOUT, f"{entry.name}: no reply within {budget_s:.2f}s")
        self.clock.now += self.latency_s
        if isinstance(result, ProviderError):
            raise result
        return result


def ok(
    content: str = "fine answer", finish: str = "stop", prompt: int = 10, completion: int = 20
) -> Completion:
    return Completion(content, finish, prompt, completion, 5.0)


def http_error(status: int, retry_after: float | None = None) -> ProviderError:
    retryable = status == 429 or status >= 500
    return ProviderError(
        ErrorCode.MODEL_UNAVAILABLE,
        f"HTTP {status}",
        retryable=retryable,
        retry_after_s=retry_after,
        model_fault=retryable,
    )


def envelope(
    model: str = SMALL,
    fallbacks: tuple[str, ...] = (MEDIUM, LARGE),
    deadline_s: float = 10.0,
    tenant: str = "acme",
    baseline: str | None = None,
    **request_fields: Any,
) -> Envelope:
    now = utcnow()
    fields: dict[str, Any] = {
        "correlation_id": "corr-1",
        "tenant": tenant,
        "messages": [{"role": "user", "content": "hello world!"}],
        "max_tokens": 16,
        **request_fields,
    }
    return Envelope(
        request_id="req-1",
        correlation_id="corr-1",
        tenant=tenant,
        reply_to="sluice.responses",
        received_at=now,
        deadline_at=now + timedelta(seconds=deadline_s),
        request=Request.model_validate(fields),
        route=RouteDecision(model=model, reason="test", fallbacks=list(fallbacks), baseline_model=baseline),
    )


def resilience(clock: FakeClock, cache: ResponseCache | None = None, **policy: Any) -> Resilience:
    return Resilience(
        retry=RetryPolicy(attempts=3, base_s=0.1, max_backoff_s=1.0, retry_after_max_s=5.0),
        breakers=Breakers(BreakerPolicy(**{"window_s": 10.0, "min_calls": 3, "open_s": 5.0, **policy})),
        cache=cache,
        rng=random.Random(3),
        monotonic=clock.monotonic,
        wall=clock.wall,
        sleep=clock.sleep,
    )


def inference_of(outcome: Outcome) -> Any:
    assert outcome.forward is not None and outcome.forward.inference is not None
    return outcome.forward.inference


def timed_out(outcome: Outcome) -> bool:
    """Out of time, infer answers the request itself with a timeout."""
    response = outcome.response
    return (
        outcome.forward is None
        and response is not None
        and response.error is not None
        and response.error.code is ErrorCode.TIMEOUT
    )


# --- retries, fallbacks, breakers (scripted) --------------------------------------------------


async def test_retryable_failures_are_retried_on_the_same_model_with_backoff() -> None:
    clock = FakeClock()
    caller = ScriptedCaller(clock, {SMALL: [http_error(503), http_error(500), ok()]})
    outcome = await infer(envelope(), BUILTIN_CATALOG, caller, resilience=resilience(clock))
    inference = inference_of(outcome)
    assert inference.error is None and inference.model == SMALL
    assert inference.attempts == 3
    assert [name for name, _ in caller.calls] == [SMALL] * 3
    assert len(clock.slept) == 2 and all(0 <= s <= 1.0 for s in clock.slept)
    assert outcome.event.attributes["attempts"] == "3"
    assert "fallback_from" not in outcome.event.attributes


async def test_exhausted_retries_fall_back_to_the_next_model() -> None:
    clock = FakeClock()
    caller = ScriptedCaller(clock, {SMALL: [http_error(503)], MEDIUM: [ok("from medium")]})
    outcome = await infer(envelope(), BUILTIN_CATALOG, caller, resilience=resilience(clock))
    inference = inference_of(outcome)
    assert (inference.model, inference.content, inference.attempts) == (MEDIUM, "from medium", 4)
    assert outcome.event.attributes["fallback_from"] == SMALL
    assert outcome.event.model == MEDIUM
    assert outcome.forward is not None and outcome.forward.tried_models == [SMALL, MEDIUM]
    # cost is the answering model's usage at its own prices
    assert inference.cost_usd == pytest.approx((10 * 0.001 + 20 * 0.003) / 1000)


async def test_a_non_retryable_error_moves_on_without_retrying() -> None:
    clock = FakeClock()
    caller = ScriptedCaller(clock, {SMALL: [http_error(400)], MEDIUM: [ok()]})
    outcome = await infer(envelope(), BUILTIN_CATALOG, caller, resilience=resilience(clock))
    assert [name for name, _ in caller.calls] == [SMALL, MEDIUM]
    assert clock.slept == []
    assert inference_of(outcome).model == MEDIUM


async def test_retry_after_is_honoured_when_it_fits() -> None:
    clock = FakeClock()
    caller = ScriptedCaller(clock, {SMALL: [http_error(429, retry_after=0.8), ok()]})
    outcome = await infer(envelope(), BUILTIN_CATALOG, caller, resilience=resilience(clock))
    assert inference_of(outcome).model == SMALL
    assert clock.slept and clock.slept[0] >= 0.8


async def test_a_long_retry_after_with_a_fallback_left_moves_on_at_once() -> None:
    clock = FakeClock()
    caller = ScriptedCaller(clock, {SMALL: [http_error(429, retry_after=3.0)], MEDIUM: [ok()]})
    outcome = await infer(envelope(), BUILTIN_CATALOG, caller, resilience=resilience(clock))
    assert inference_of(outcome).model == MEDIUM
    assert clock.slept == []


async def test_the_last_model_waits_out_a_retry_after_up_to_the_cap() -> None:
    clock = FakeClock()
    caller = ScriptedCaller(clock, {SMALL: [http_error(429, retry_after=3.0), ok()]})
    outcome = await infer(envelope(fallbacks=()), BUILTIN_CATALOG, caller, resilience=resilience(clock))
    assert inference_of(outcome).model == SMALL
    assert clock.slept[0] >= 3.0


async def test_no_retry_sleeps_past_the_deadline() -> None:
    clock = FakeClock()
    caller = ScriptedCaller(clock, {SMALL: [http_error(429, retry_after=4.0)]})
    started = clock.now
    outcome = await infer(
        envelope(fallbacks=(), deadline_s=2.0), BUILTIN_CATALOG, caller, resilience=resilience(clock)
    )
    inference = inference_of(outcome)
    assert inference.error is not None and inference.error.code is ErrorCode.MODEL_UNAVAILABLE
    assert clock.slept == [] and len(caller.calls) == 1
    assert clock.now - started <= 2.0


async def test_every_call_gets_only_what_is_left_of_the_deadline() -> None:
    clock = FakeClock()
    caller = ScriptedCaller(clock, {SMALL: [ok()], MEDIUM: [ok()]}, latency_s=5.0)
    started = clock.now
    outcome = await infer(
        envelope(fallbacks=(MEDIUM,), deadline_s=3.0), BUILTIN_CATALOG, caller, resilience=resilience(clock)
    )
    assert timed_out(outcome)
    assert caller.calls[0][1] <= 3.0
    assert clock.now - started <= 3.0  # the fallback was not called with a spent budget
    assert [name for name, _ in caller.calls] == [SMALL]


async def test_an_open_breaker_skips_the_model_without_calling_it() -> None:
    clock = FakeClock()
    res = resilience(clock)
    caller = ScriptedCaller(clock, {SMALL: [http_error(503)], MEDIUM: [ok()]})
    await infer(envelope(), BUILTIN_CATALOG, caller, resilience=res)  # 3 failures: opens
    assert res.breakers.of(SMALL).state is BreakerState.OPEN
    caller.calls.clear()
    outcome = await infer(envelope(), BUILTIN_CATALOG, caller, resilience=res)
    assert [name for name, _ in caller.calls] == [MEDIUM]
    assert inference_of(outcome).model == MEDIUM
    [change] = res.breakers.drain()
    assert (change.model, change.state) == (SMALL, BreakerState.OPEN)


async def test_the_breaker_probes_and_closes_after_recovery() -> None:
    clock = FakeClock()
    res = resilience(clock, half_open_probes=2)
    caller = ScriptedCaller(
        clock, {SMALL: [http_error(503), http_error(503), http_error(503), ok()], MEDIUM: [ok()]}
    )
    await infer(envelope(), BUILTIN_CATALOG, caller, resilience=res)
    assert res.breakers.of(SMALL).state is BreakerState.OPEN
    clock.now += 5.0  # open time elapsed, and the model is healthy again
    for _ in range(2):
        assert inference_of(await infer(envelope(), BUILTIN_CATALOG, caller, resilience=res)).model == SMALL
    assert res.breakers.of(SMALL).state is BreakerState.CLOSED
    assert [t.state for t in res.breakers.drain()] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


async def test_every_model_failing_is_one_typed_failure_naming_them_all() -> None:
    clock = FakeClock()
    caller = ScriptedCaller(
        clock, {SMALL: [http_error(503)], MEDIUM: [http_error(404)], LARGE: [http_error(500)]}
    )
    outcome = await infer(envelope(), BUILTIN_CATALOG, caller, resilience=resilience(clock))
    inference = inference_of(outcome)
    assert inference.error is not None and inference.error.code is ErrorCode.MODEL_UNAVAILABLE
    assert inference.model == LARGE
    assert all(f"HTTP {status}" in inference.error.message for status in (503, 404, 500))
    assert (
        outcome.event.status == "failed" and outcome.event.attributes["tried"] == f"{SMALL},{MEDIUM},{LARGE}"
    )
    final = validate_response(outcome.forward, utcnow())  # type: ignore[arg-type]
    assert final.response is not None and final.response.status is Status.FAILED
    assert final.response.error is not None and final.response.error.code is ErrorCode.MODEL_UNAVAILABLE


async def test_an_unknown_fallback_is_skipped() -> None:
    clock = FakeClock()
    caller = ScriptedCaller(clock, {SMALL: [http_error(400)], MEDIUM: [ok()]})
    outcome = await infer(
        envelope(fallbacks=("ghost", MEDIUM)), BUILTIN_CATALOG, caller, resilience=resilience(clock)
    )
    assert inference_of(outcome).model == MEDIUM


# --- cost accounting ------------------------------------------------------------------------------


async def test_inference_carries_routing_savings_against_the_baseline() -> None:
    clock = FakeClock()
    caller = ScriptedCaller(clock, {SMALL: [ok(prompt=100, completion=50)]})
    outcome = await infer(envelope(baseline=LARGE), BUILTIN_CATALOG, caller, resilience=resilience(clock))
    inference = inference_of(outcome)
    small_cost = (100 * 0.0002 + 50 * 0.0006) / 1000
    assert inference.cost_usd == pytest.approx(small_cost)
    assert inference.routing_savings_usd == pytest.approx((100 * 0.005 + 50 * 0.015) / 1000 - small_cost)
    assert (
        inference_of(
            await infer(envelope(), BUILTIN_CATALOG, caller, resilience=resilience(clock))
        ).routing_savings_usd
        == 0.0
    )


# --- breaker events -------------------------------------------------------------------------------


def test_breaker_transitions_become_system_events_with_deterministic_ids() -> None:
    change = Transition(SMALL, BreakerState.CLOSED, BreakerState.OPEN, 1_700_000_000.25, 10, 9, "9/10 bad")
    event = breaker_event(change)
    assert event.request_id == breaker_request_id(change) == f"breaker/{SMALL}/open/1700000000250"
    assert event.event_id == event_id_for(event.request_id, Stage.INFER)
    assert event.event_id == breaker_event(change).event_id
    assert (event.tenant, event.stage, event.status, event.model) == (
        "_system",
        Stage.INFER,
        "breaker_open",
        SMALL,
    )
    assert event.attributes["from"] == "closed" and event.attributes["reason"] == "9/10 bad"
    assert event.ts.timestamp() == pytest.approx(1_700_000_000.25)


# --- against the real simulator -------------------------------------------------------------------


async def set_fault(server: SimulatorServer, model: str, **fault: Any) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            f"http://127.0.0.1:{server.port}/admin/faults", json={"model": model, **fault}
        )
        assert reply.status_code == 200, reply.text


async def calls(server: SimulatorServer, model: str) -> int:
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"http://127.0.0.1:{server.port}/admin/stats")).json()
        return int(stats["models"][model]["calls"])


def live(**overrides: Any) -> Resilience:
    return Resilience(
        retry=RetryPolicy(attempts=3, base_s=0.01, max_backoff_s=0.05, retry_after_max_s=1.0),
        breakers=Breakers(BreakerPolicy(window_s=5.0, min_calls=3, open_s=1.0)),
        **overrides,
    )


async def test_down_primary_falls_back_over_http(client: ChatClient, simulator: SimulatorServer) -> None:
    await set_fault(simulator, SMALL, mode="down")
    outcome = await infer(envelope(), BUILTIN_CATALOG, client, resilience=live())
    inference = inference_of(outcome)
    assert inference.error is None and inference.model == MEDIUM
    assert inference.content.startswith("[simulated sim-medium]")
    assert await calls(simulator, SMALL) == 3 and await calls(simulator, MEDIUM) == 1


async def test_dropped_connections_are_retried_then_fall_back(
    client: ChatClient, simulator: SimulatorServer
) -> None:
    await set_fault(simulator, SMALL, mode="down", close=True)
    outcome = await infer(envelope(), BUILTIN_CATALOG, client, resilience=live())
    assert inference_of(outcome).model == MEDIUM


async def test_rate_limited_model_is_retried_after_its_retry_after(
    client: ChatClient, simulator: SimulatorServer
) -> None:
    await set_fault(simulator, SMALL, mode="rate_limited", retry_after=0.3)
    slept: list[float] = []

    async def recover_later() -> None:
        await set_fault(simulator, SMALL, mode="none")

    res = live()
    res.sleep = _then(recover_later, slept)  # the model recovers while the client waits
    outcome = await infer(envelope(fallbacks=()), BUILTIN_CATALOG, client, resilience=res)
    assert inference_of(outcome).model == SMALL and inference_of(outcome).attempts == 2
    assert slept and max(slept) >= 0.3  # the backoff honoured Retry-After


class BudgetRecorder:
    """The model client, recording the time budget infer gives each call (no clock is read)."""

    def __init__(self, inner: ChatClient) -> None:
        self.inner = inner
        self.budgets: list[float] = []

    async def complete(self, entry: Any, payload: dict[str, Any], budget_s: float) -> Any:
        self.budgets.append(budget_s)
        return await self.inner.complete(entry, payload, budget_s)

    def within(self, deadline_s: float) -> bool:
        """Called at least once; each budget inside the deadline, and never more than the last."""
        budgets = self.budgets
        return bool(budgets) and budgets[0] <= deadline_s and budgets == sorted(budgets, reverse=True)


def _then(action: Any, slept: list[float]) -> Any:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)
        await action()

    return sleep


async def test_slow_model_times_out_inside_the_deadline_and_falls_back(
    client: ChatClient, simulator: SimulatorServer
) -> None:
    await set_fault(simulator, SMALL, mode="timeout")
    catalog = Catalog(
        default=SMALL,
        models=tuple(
            m.model_copy(update={"timeout_s": 0.3}) if m.name == SMALL else m for m in BUILTIN_CATALOG.models
        ),
    )
    recording = BudgetRecorder(client)
    outcome = await infer(envelope(deadline_s=2.0), catalog, recording, resilience=live())
    assert inference_of(outcome).model == MEDIUM
    assert recording.within(2.0)  # every call was bounded by what was left of the deadline


async def test_a_hanging_model_never_outlives_the_deadline(
    client: ChatClient, simulator: SimulatorServer
) -> None:
    await set_fault(simulator, "*", mode="timeout")
    recording = BudgetRecorder(client)
    outcome = await infer(envelope(deadline_s=0.6), BUILTIN_CATALOG, recording, resilience=live())
    assert timed_out(outcome)
    assert recording.within(0.6)  # no call was given more time than the deadline left


# --- Anthropic messages API over HTTP -------------------------------------------------------------


def anthropic_catalog(url: str, key_env: str | None = "SIM_ANTHROPIC_KEY") -> Catalog:
    claude = ModelEntry(
        name="claude-sim",
        kind="anthropic",
        base_url=url,
        upstream_model=MEDIUM,
        api_key_env=key_env,
        input_price_per_1k=0.003,
        output_price_per_1k=0.015,
    )
    return Catalog(default="claude-sim", models=(claude, *BUILTIN_CATALOG.models))


async def test_anthropic_kind_calls_the_messages_api(
    client: ChatClient, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_ANTHROPIC_KEY", "sk-ant-test")
    catalog = anthropic_catalog(f"http://127.0.0.1:{simulator.port}")
    request = envelope(
        "claude-sim",
        fallbacks=(),
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello world!"},
        ],
    )
    outcome = await infer(request, catalog, client, resilience=live())
    inference = inference_of(outcome)
    assert inference.error is None and inference.model == "claude-sim"
    assert inference.content.startswith("[simulated sim-medium]")
    assert inference.finish_reason == "length"  # stop_reason max_tokens
    # the system prompt went in `system`: 4 tokens, plus 3 for the user turn
    assert (inference.usage.prompt_tokens, inference.usage.completion_tokens) == (7, 16)
    assert inference.cost_usd == pytest.approx((7 * 0.003 + 16 * 0.015) / 1000)
    assert await calls(simulator, MEDIUM) == 1


async def test_anthropic_without_a_key_is_a_401_and_falls_back(
    client: ChatClient, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIM_ANTHROPIC_KEY", raising=False)
    catalog = anthropic_catalog(f"http://127.0.0.1:{simulator.port}/v1")
    outcome = await infer(envelope("claude-sim", fallbacks=(SMALL,)), catalog, client, resilience=live())
    inference = inference_of(outcome)
    assert inference.model == SMALL
    assert "HTTP 401" in outcome.event.attributes["fallback_errors"]
    assert await calls(simulator, MEDIUM) == 0


async def test_anthropic_rate_limit_is_retried(
    client: ChatClient, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_ANTHROPIC_KEY", "sk-ant-test")
    await set_fault(simulator, MEDIUM, mode="rate_limited", retry_after=0.05)
    catalog = anthropic_catalog(f"http://127.0.0.1:{simulator.port}")
    outcome = await infer(envelope("claude-sim", fallbacks=(SMALL,)), catalog, client, resilience=live())
    assert inference_of(outcome).model == SMALL
    assert await calls(simulator, MEDIUM) == 3  # every attempt was a 429


# --- cache ---------------------------------------------------------------------------------------


def test_cache_eligibility() -> None:
    assert cache_eligible(envelope(temperature=0))
    assert not cache_eligible(envelope(temperature=0.7))
    assert cache_eligible(envelope(temperature=0.7, metadata={"cache": "true"}))
    assert not cache_eligible(envelope(temperature=0, metadata={"cache": "false"}))
    assert not cache_eligible(envelope(temperature=0).model_copy(update={"retries": 1}))
    assert not cache_eligible(envelope(temperature=0).model_copy(update={"repair_attempts": 1}))


def test_cache_key_covers_the_normalised_request_and_the_tenant() -> None:
    base = cache_key(envelope(temperature=0))
    assert base.startswith("acme/")
    assert (
        cache_key(envelope(temperature=0, messages=[{"role": "user", "content": "  hello world!\r\n"}]))
        == base
    )
    assert cache_key(envelope(temperature=0, tenant="other")) != base
    named_model = envelope(temperature=0)
    named_model.request = named_model.request.model_copy(update={"model": SMALL})
    different = [
        envelope(temperature=0, messages=[{"role": "user", "content": "hello world?"}]),
        envelope(temperature=0, messages=[{"role": "system", "content": "hello world!"}]),
        envelope(temperature=0, max_tokens=17),
        envelope(temperature=0.5, metadata={"cache": "true"}),
        named_model,
        envelope(temperature=0, response_format={"type": "json_object"}),
        envelope(temperature=0, context=[{"id": "d", "text": "t"}]),
    ]
    assert len({cache_key(e) for e in different} | {base}) == len(different) + 1
    # a client's named model is part of the key; which model the router picked is not
    assert cache_key(envelope(SMALL, temperature=0)) == cache_key(envelope(LARGE, temperature=0))


async def test_a_cache_hit_costs_nothing_and_records_the_savings() -> None:
    clock = FakeClock()
    cache = ResponseCache({}, ttl_s=60, max_entries=10)
    res = resilience(clock, cache)
    caller = ScriptedCaller(clock, {SMALL: [ok(prompt=100, completion=50)]})
    first = inference_of(await infer(envelope(temperature=0), BUILTIN_CATALOG, caller, resilience=res))
    assert not first.cached and first.cost_usd > 0
    outcome = await infer(envelope(temperature=0), BUILTIN_CATALOG, caller, resilience=res)
    hit = inference_of(outcome)
    assert len(caller.calls) == 1
    assert hit.cached and hit.cost_usd == 0.0 and hit.usage.total_tokens == 0
    assert hit.cache_savings_usd == pytest.approx(first.cost_usd)
    assert hit.content == first.content and hit.model == SMALL and hit.attempts == 0
    assert outcome.event.attributes["cache"] == "hit"
    final = validate_response(outcome.forward, utcnow())  # type: ignore[arg-type]
    assert final.response is not None and final.response.cached is True
    assert final.response.cost_usd == 0.0
    assert final.event.cached is True and final.event.cache_savings_usd == pytest.approx(first.cost_usd)


@pytest.mark.parametrize(
    "completion", [ok(content=""), ok(content="   "), ok(finish="content_filter"), ok(finish="")]
)
async def test_abnormal_answers_are_not_cached(completion: Completion) -> None:
    clock = FakeClock()
    cache = ResponseCache({}, ttl_s=60, max_entries=10)
    caller = ScriptedCaller(clock, {SMALL: [completion]})
    await infer(envelope(temperature=0), BUILTIN_CATALOG, caller, resilience=resilience(clock, cache))
    assert cache.store == {}


async def test_failed_calls_are_not_cached() -> None:
    clock = FakeClock()
    cache = ResponseCache({}, ttl_s=60, max_entries=10)
    caller = ScriptedCaller(clock, {SMALL: [http_error(400)]})
    await infer(
        envelope(temperature=0, fallbacks=()), BUILTIN_CATALOG, caller, resilience=resilience(clock, cache)
    )
    assert cache.store == {}


def test_cache_entries_expire_and_the_oldest_are_evicted() -> None:
    written: list[tuple[int, str, Any]] = []
    cache = ResponseCache({}, ttl_s=10, max_entries=2, changelog=lambda p, k, v: written.append((p, k, v)))
    answer = CachedAnswer("t", SMALL, "x", "stop", 1, 1, 0.1)
    cache.put("t/a", answer, now=0.0, partition=3)
    cache.put("t/b", answer, now=1.0)
    cache.put("t/c", answer, now=2.0)
    assert list(cache.store) == ["t/b", "t/c"]
    assert (3, "t/a", None) in written  # the eviction is a tombstone on the entry's partition
    assert cache.get("t/b", "t", now=10.5) is not None
    assert cache.get("t/b", "t", now=11.5) is None  # past its TTL
    assert cache.sweep(now=11.5) == 1 and list(cache.store) == ["t/c"]
    assert cache.get("t/c", "someone-else", now=3.0) is None  # an entry is only its tenant's
    cache.store["t/bad"] = {"tenant": "t"}
    assert cache.get("t/bad", "t", now=3.0) is None  # not an entry: a miss, never an error


async def test_workload_with_40_percent_repeats_hits_and_never_crosses_tenants() -> None:
    """1,000 requests over 4 tenants; 40 % repeat an earlier request of the same tenant, and
    every tenant also sends the same prompts as the others (which must never hit)."""
    clock = FakeClock()
    cache = ResponseCache({}, ttl_s=3600, max_entries=100_000)
    res = resilience(clock, cache)
    tenant_now = ["t0"]
    made = [0]

    class TenantCaller(ScriptedCaller):
        async def complete(self, entry: ModelEntry, payload: dict[str, Any], budget_s: float) -> Completion:
            made[0] += 1
            return ok(content=f"answer for {tenant_now[0]} #{made[0]}")

    caller = TenantCaller(clock, {})
    rng = random.Random(5)
    tenants = ["t0", "t1", "t2", "t3"]
    sent: dict[str, list[str]] = {t: [] for t in tenants}
    total, hits, crossed = 1000, 0, 0
    for i in range(total):
        tenant = tenants[i % 4]
        if i % 5 in (3, 4) and sent[tenant]:  # 2 in 5 repeat an earlier request of this tenant
            prompt = rng.choice(sent[tenant])
        else:
            prompt = f"question {i // 4}"  # the same prompt reaches each of the 4 tenants once
            sent[tenant].append(prompt)
        tenant_now[0] = tenant
        request = envelope(temperature=0, tenant=tenant, messages=[{"role": "user", "content": prompt}])
        inference = inference_of(await infer(request, BUILTIN_CATALOG, caller, resilience=res))
        hits += inference.cached
        crossed += not inference.content.startswith(f"answer for {tenant} ")
    repeats = total - sum(len(v) for v in sent.values())
    assert repeats / total >= 0.39
    assert hits == repeats  # every repeat hit, and nothing else did
    assert hits / total >= 0.39
    assert crossed == 0
