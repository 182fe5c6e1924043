"""Three replicas of one model on the real simulator over HTTP, one slow (1 s) and one down:
every request is answered, the down one is taken out within the breaker window and probed
back in once it recovers, and the slow one gets fewer calls than the fast one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from agents.infer import Resilience, RetryPolicy, infer
from schemas import Envelope, Request, RouteDecision
from sluice.local.simulator import SimulatorConfig, SimulatorServer, serve
from sluice.outcome import utcnow
from sluice.providers.catalog import Catalog, Deployment, ModelEntry
from sluice.providers.openai_http import ChatClient
from sluice.providers.resilience import BreakerPolicy, Breakers, BreakerState
from sluice.settings import Settings

pytestmark = pytest.mark.e2e

WINDOW_S = 3.0


@pytest.fixture()
async def replicas() -> AsyncIterator[dict[str, SimulatorServer]]:
    servers = {
        "fast": await serve(SimulatorConfig(latency_ms=20, latency_jitter_ms=0, seed=1)),
        "slow": await serve(SimulatorConfig(latency_ms=1000, latency_jitter_ms=0, seed=2)),
        "down": await serve(SimulatorConfig(latency_ms=20, latency_jitter_ms=0, seed=3)),
    }
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.close()


def envelope(number: int) -> Envelope:
    now = utcnow()
    request = Request.model_validate(
        {"correlation_id": f"c{number}", "tenant": "acme", "messages": [{"role": "user", "content": "hi"}]}
    )
    return Envelope(
        request_id=f"r{number}",
        correlation_id=f"c{number}",
        tenant="acme",
        reply_to="sluice.responses",
        received_at=now,
        deadline_at=now + timedelta(seconds=10),
        request=request,
        route=RouteDecision(model="sim-small", reason="test"),
    )


async def calls(server: SimulatorServer) -> int:
    async with httpx.AsyncClient() as http:
        stats = (await http.get(server.url.removesuffix("/v1") + "/admin/stats")).json()
    return int(stats["models"]["sim-small"]["calls"])


async def set_fault(server: SimulatorServer, mode: str) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            server.url.removesuffix("/v1") + "/admin/faults", json={"model": "*", "mode": mode}
        )
        assert reply.status_code == 200


async def test_three_replicas_one_slow_one_down(
    settings: Settings, replicas: dict[str, SimulatorServer]
) -> None:
    await set_fault(replicas["down"], "down")
    deployments = tuple(
        Deployment(base_url=server.url, name=name, max_concurrency=64) for name, server in replicas.items()
    )
    entry = ModelEntry(
        name="sim-small", deployments=deployments, input_price_per_1k=0.001, output_price_per_1k=0.002
    )
    catalog = Catalog(default="sim-small", models=(entry,))
    policy = BreakerPolicy(window_s=WINDOW_S, min_calls=3, failure_rate=0.5, slow_call_s=30.0, open_s=2.0)
    res = Resilience(
        retry=RetryPolicy(attempts=3, base_s=0.05, max_backoff_s=0.2),
        breakers=Breakers(policy, {"sim-small": 3}),
    )
    client = ChatClient(settings.with_overrides(infer_max_in_flight=32))
    try:
        started = time.time()
        # open loop: 20 requests per second for 3 s
        tasks = []
        for number in range(60):
            tasks.append(asyncio.create_task(infer(envelope(number), catalog, client, resilience=res)))
            await asyncio.sleep(0.05)
        outcomes = await asyncio.gather(*tasks)
        answered = [o.forward.inference for o in outcomes if o.forward and o.forward.inference]
        assert len(answered) == 60 and all(i.error is None and i.content for i in answered)
        used = [o.event.attributes["deployment"] for o in outcomes]
        assert "down" not in used

        changes = res.breakers.drain()
        opened = [t for t in changes if t.deployment == "down" and t.state is BreakerState.OPEN]
        assert opened, changes
        assert opened[0].at_s - started <= WINDOW_S
        assert not [t for t in changes if t.deployment in ("fast", "slow") and t.state is BreakerState.OPEN]
        down_calls = await calls(replicas["down"])
        assert down_calls < 10  # out after a few calls, not a third of 60
        fast, slow = await calls(replicas["fast"]), await calls(replicas["slow"])
        assert slow < fast, (fast, slow)

        # recovered: after its open time a probe reaches it and closes its breaker
        await set_fault(replicas["down"], "none")
        await asyncio.sleep(policy.open_s + 0.1)
        for batch in range(2):  # two probes in a row close it; one is let through at a time
            numbers = range(100 + 10 * batch, 110 + 10 * batch)
            batch_outcomes = await asyncio.gather(
                *(infer(envelope(n), catalog, client, resilience=res) for n in numbers)
            )
            assert all(
                o.forward and o.forward.inference and not o.forward.inference.error for o in batch_outcomes
            )
        back = res.breakers.drain()
        assert [t.state for t in back if t.deployment == "down"] == [
            BreakerState.HALF_OPEN,
            BreakerState.CLOSED,
        ]
        assert await calls(replicas["down"]) > down_calls
    finally:
        await client.close()
