"""`model: auto` through real processes: the worker routes by the request's features, applies the
feedback loop's advice from the route-advice topic, and enforces the tenant's cost cap."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from schemas import RouteAdvice
from sluice.codec import encode
from sluice.edge.client import SluiceClient
from sluice.local.broker import EmbeddedBroker
from sluice.tenants import AccessRules, TenantConfig
from tests.e2e.stack import Stack, publish_raw, running_stack, stack_settings
from topics import ROUTE_ADVICE

pytestmark = pytest.mark.e2e

SIMPLE = "What is the capital of Australia?"
MATH = (
    "Kylar went to the store to buy glasses for his new apartment. One glass costs $5, but every second "
    "glass costs only 60% of the price. Kylar wants to buy 16 glasses. How much does he need to pay for them?"
)


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("routing")
    capped = TenantConfig(access=AccessRules(max_cost_per_request_usd=0.0001))
    settings = stack_settings(broker.bootstrap, root, "r", tenants={"capped": capped})
    with running_stack(settings, root / "logs") as running:
        yield running


async def test_auto_routes_by_features_then_follows_feedback_advice(stack: Stack) -> None:
    async with SluiceClient(settings=stack.settings, timeout_s=60) as client:
        simple = await client.request(SIMPLE, max_tokens=32)
        math = await client.request(MATH, max_tokens=32)
        assert (simple.status.value, simple.model) == ("ok", "sim-small")
        assert (math.status.value, math.model) == ("ok", "sim-medium")

        demotion = RouteAdvice(
            route="simple",
            model="sim-small",
            demote=True,
            satisfaction=-0.62,
            samples=40,
            reason="e2e",
            ts=datetime.now(UTC),
        )
        topic = ROUTE_ADVICE.name(stack.settings.topic_prefix)
        await publish_raw(stack.settings.bootstrap, topic, [(b"simple|sim-small", encode(demotion))])

        models: list[str | None] = []
        for _ in range(60):  # the worker picks the advice up within a poll of the topic; bounded wait
            models.append((await client.request(SIMPLE, max_tokens=32)).model)
            if models[-1] == "sim-medium":
                break
            await asyncio.sleep(0.5)
        assert models[-1] == "sim-medium", models


async def test_cost_cap_rejects_naming_the_tenant_field(stack: Stack) -> None:
    async with SluiceClient(settings=stack.settings, timeout_s=60) as client:
        answer = await client.request(MATH, tenant="capped", max_tokens=512)
    assert answer.status.value == "rejected"
    assert answer.error is not None and answer.error.code.value == "budget_exceeded"
    assert answer.error.message.startswith("access.max_cost_per_request_usd:")
