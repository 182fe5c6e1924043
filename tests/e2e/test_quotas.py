"""Per-tenant rate limits and budgets on a real stack (broker, simulator, sink, worker): the
OpenAI SDK's typed 429s, 500 simultaneous requests against a budget and a rate limit, the
configured rate held over several windows, and quota state surviving a worker restart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import openai
import orjson
import pytest

from agents.admission import reservation_for
from schemas import Envelope, ErrorCode, Request, Response, Status
from sluice.edge.client import SluiceClient
from sluice.edge.gateway import serve_gateway
from sluice.edge.identity import tenant_resolver
from sluice.local.broker import EmbeddedBroker, free_port
from sluice.providers.catalog import BUILTIN_CATALOG
from sluice.tenants import AccessRules, QuotaRules, TenantConfig, hash_key
from tests.e2e.stack import Stack, eventually, read_topic, running_stack, stack_settings

pytestmark = pytest.mark.e2e

WINDOW_S = 6.0
BUCKETS = 60
MODEL_LATENCY_MS = 2500.0  # admissions of a burst are all decided before the first one settles
PROMPT = [{"role": "user", "content": "Say something short about quotas."}]
MAX_TOKENS = 24
RL_KEY, BROKE_KEY = "sk-sluice-quota-rl-test", "sk-sluice-quota-broke-test"
BUDGET_N = 20  # the burst tenant's budget covers exactly this many worst cases
RESTART_N = 5
BURST_RPM = 50
STEADY_RPM = 60


def limited(**quota: float | int) -> TenantConfig:
    return TenantConfig(quota=QuotaRules.model_validate(quota))


def worst_case_usd(tenant: TenantConfig) -> float:
    """What admission reserves for one of this module's requests (the same function)."""
    now = datetime.now(UTC)
    request = Request.model_validate(
        {"correlation_id": "x", "tenant": "x", "messages": PROMPT, "max_tokens": MAX_TOKENS, "model": "auto"}
    )
    envelope = Envelope(
        request_id="x",
        correlation_id="x",
        tenant="x",
        reply_to="x",
        received_at=now,
        deadline_at=now + timedelta(seconds=30),
        request=request,
    )
    return reservation_for(envelope, tenant, BUILTIN_CATALOG).worst_usd


UNIT = worst_case_usd(TenantConfig())
TENANTS = {
    "sdk-rl": TenantConfig(
        access=AccessRules(api_key_sha256=(hash_key(RL_KEY),)), quota=QuotaRules(requests_per_minute=2)
    ),
    "sdk-broke": TenantConfig(
        access=AccessRules(api_key_sha256=(hash_key(BROKE_KEY),)), quota=QuotaRules(daily_budget_usd=0.0)
    ),
    "burst-budget": limited(daily_budget_usd=BUDGET_N * UNIT),
    "burst-rate": limited(requests_per_minute=BURST_RPM),
    "steady-rate": limited(requests_per_minute=STEADY_RPM),
    "restart": limited(daily_budget_usd=RESTART_N * UNIT),
}


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("quotas")
    settings = stack_settings(
        broker.bootstrap,
        root,
        "q",
        tenants=TENANTS,
        quota_window_s=WINDOW_S,
        quota_window_buckets=BUCKETS,
    )
    with running_stack(settings, root / "logs", simulator_latency_ms=MODEL_LATENCY_MS) as running:
        yield running


@pytest.fixture()
async def client(stack: Stack) -> AsyncIterator[SluiceClient]:
    async with SluiceClient(settings=stack.settings, timeout_s=120) as sluice:
        yield sluice


def error_code(response: Response) -> ErrorCode | None:
    return response.error.code if response.error is not None else None


async def burst(client: SluiceClient, tenant: str, count: int) -> list[Response]:
    tag = f"{tenant}-{uuid.uuid4().hex[:6]}"
    return list(
        await asyncio.gather(
            *(
                client.request(
                    PROMPT, tenant=tenant, correlation_id=f"{tenant}-{tag}-{i}", max_tokens=MAX_TOKENS
                )
                for i in range(count)
            )
        )
    )


async def admission_times(stack: Stack, tenant: str) -> list[float]:
    """When the admit step admitted each of the tenant's requests (its `admitted` events)."""
    times = []
    for _, value, _, _ in await read_topic(stack.settings.bootstrap, f"{stack.settings.topic_prefix}events"):
        event = orjson.loads(value or b"{}")
        if event.get("tenant") == tenant and event.get("attributes", {}).get("admission") == "admitted":
            times.append(datetime.fromisoformat(event["ts"]).timestamp())
    return sorted(times)


def busiest_window(times: list[float], length: float) -> int:
    """Most admissions within any span shorter than `length`."""
    return max((sum(1 for t in times if start <= t < start + length) for start in times), default=0)


def spend_of(stack: Stack, tenant: str) -> tuple[int, float]:
    """(requests, cost_usd) the sink recorded in ClickHouse's `requests` table for a tenant."""
    rows = [row for row in stack.query("tenant_spend", minutes=60) if row["tenant"] == tenant]
    if not rows:
        return 0, 0.0
    return int(str(rows[0]["requests"])), float(str(rows[0]["cost_usd"]))


# --- the OpenAI SDK's view ---------------------------------------------------------------------------


async def test_the_openai_sdk_gets_rate_limit_errors_with_retry_after(stack: Stack) -> None:
    port = free_port()
    resolve = tenant_resolver(stack.settings.tenants)
    async with serve_gateway(stack.settings, "127.0.0.1", port, resolve_tenant=resolve):
        base = f"http://127.0.0.1:{port}/v1"
        async with openai.AsyncOpenAI(base_url=base, api_key=RL_KEY, max_retries=0, timeout=60) as sdk:
            # Three at once (answers take seconds, longer than the window): two fit the limit.
            calls = [
                sdk.chat.completions.create(model="auto", messages=PROMPT, max_tokens=8) for _ in range(3)
            ]
            results = await asyncio.gather(*calls, return_exceptions=True)
        async with openai.AsyncOpenAI(base_url=base, api_key=BROKE_KEY, max_retries=0, timeout=60) as sdk:
            with pytest.raises(openai.RateLimitError) as broke_error:
                await sdk.chat.completions.create(model="auto", messages=PROMPT, max_tokens=8)

    errors = [result for result in results if isinstance(result, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], openai.RateLimitError), results
    assert all(r.choices[0].message.content for r in results if not isinstance(r, BaseException))
    rate = errors[0]
    assert rate.status_code == 429 and rate.code == "rate_limited" and rate.type == "rate_limit_error"
    assert "2 requests per 6 s" in rate.message
    assert 1 <= int(rate.response.headers["Retry-After"]) <= WINDOW_S
    budget = broke_error.value
    assert (
        budget.status_code == 429 and budget.code == "budget_exceeded" and budget.type == "insufficient_quota"
    )
    assert int(budget.response.headers["Retry-After"]) > WINDOW_S  # the budget comes back tomorrow


# --- concurrency -------------------------------------------------------------------------------------


async def test_500_simultaneous_requests_never_spend_past_the_budget(
    stack: Stack, client: SluiceClient
) -> None:
    responses = await burst(client, "burst-budget", 500)
    ok = [r for r in responses if r.status is Status.OK]
    refused = [r for r in responses if error_code(r) is ErrorCode.BUDGET_EXCEEDED]
    assert len(ok) + len(refused) == 500, {error_code(r) for r in responses}
    print(f"budget burst: {len(ok)} of 500 answered (budget covers {BUDGET_N} worst cases)")
    assert 0 < len(ok) <= BUDGET_N
    assert all(r.error is not None and r.error.retry_after_s is not None for r in refused)
    budget = TENANTS["burst-budget"].quota.daily_budget_usd
    assert budget is not None
    assert sum(r.cost_usd for r in ok) <= budget
    await eventually(lambda: spend_of(stack, "burst-budget")[0] == 500, timeout=60)
    _, recorded = spend_of(stack, "burst-budget")
    assert 0 < recorded <= budget
    assert recorded == pytest.approx(sum(r.cost_usd for r in ok))


async def test_500_simultaneous_requests_get_the_rate_limit(stack: Stack, client: SluiceClient) -> None:
    responses = await burst(client, "burst-rate", 500)
    ok = [r for r in responses if r.status is Status.OK]
    limited_count = sum(1 for r in responses if error_code(r) is ErrorCode.RATE_LIMITED)
    assert len(ok) + limited_count == 500
    times = await admission_times(stack, "burst-rate")
    span = times[-1] - times[0]
    print(f"rate burst: {len(ok)} of 500 admitted (limit {BURST_RPM}), decided over {span:.2f} s")
    assert len(times) == len(ok)
    # No window (whole buckets) holds more than the limit; a burst decided within one window
    # gets exactly the limit.
    assert busiest_window(times, WINDOW_S - WINDOW_S / BUCKETS) <= BURST_RPM
    if times[-1] - times[0] < WINDOW_S - WINDOW_S / BUCKETS:
        assert len(ok) == BURST_RPM
    else:
        assert len(ok) >= BURST_RPM


async def test_the_configured_rate_holds_over_several_windows(stack: Stack, client: SluiceClient) -> None:
    """Twice the allowed rate for two and three quarter windows: the admitted count is three
    windows' worth (the first window fills, each later one refills as the first expires)."""
    rate = 2 * STEADY_RPM / WINDOW_S
    duration = 2.75 * WINDOW_S
    tasks = []
    tag = uuid.uuid4().hex[:6]
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(int(rate * duration)):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        tasks.append(
            asyncio.create_task(
                client.request(PROMPT, tenant="steady-rate", correlation_id=f"s-{tag}-{i}", max_tokens=8)
            )
        )
    responses = await asyncio.gather(*tasks)
    admitted = sum(1 for r in responses if error_code(r) is not ErrorCode.RATE_LIMITED)
    expected = 3 * STEADY_RPM
    print(f"steady: {admitted} of {len(responses)} admitted over 2.75 windows; configured {expected}")
    assert abs(admitted - expected) <= 0.02 * expected, admitted
    times = await admission_times(stack, "steady-rate")
    assert busiest_window(times, WINDOW_S - WINDOW_S / BUCKETS) <= STEADY_RPM


# --- durability ------------------------------------------------------------------------------------


async def test_spend_survives_a_worker_restart(stack: Stack, client: SluiceClient) -> None:
    """Three requests settle, the worker is killed and replaced; the new worker still knows
    the spend (from the quota table's changelog): only what is left of the budget is admitted."""
    first = await burst(client, "restart", 3)
    assert all(r.status is Status.OK for r in first)
    spent = sum(r.cost_usd for r in first)
    assert 0 < spent < UNIT  # so a forgotten spend would admit RESTART_N more, not RESTART_N - 1
    await asyncio.sleep(2.0)  # settlements processed and their offsets committed
    stack.kill("worker")
    replacement = stack.start("worker-restarted")
    await asyncio.to_thread(stack.wait_worker_ready, replacement)
    after = await burst(client, "restart", 10)
    ok = [r for r in after if r.status is Status.OK]
    assert all(r.status is Status.OK or error_code(r) is ErrorCode.BUDGET_EXCEEDED for r in after)
    assert len(ok) == RESTART_N - 1  # a worker that forgot the spend would admit RESTART_N
    budget = TENANTS["restart"].quota.daily_budget_usd
    assert budget is not None
    await eventually(lambda: spend_of(stack, "restart")[0] == 13, timeout=60)
    assert spend_of(stack, "restart")[1] <= budget
