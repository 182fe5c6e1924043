"""End to end: the simulator is told to return grounded, hallucinated, malformed or off-task
answers; validate-response flags, retries or blocks them per tenant policy, and ClickHouse shows
the hallucination count per model."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from schemas import Response
from sluice.edge.client import SluiceClient
from sluice.local.broker import EmbeddedBroker
from sluice.tenants import OutputRules, TenantConfig
from tests.e2e.stack import Stack, eventually, running_stack, stack_settings

pytestmark = pytest.mark.e2e

PASSAGE = {"id": "doc-1", "text": "The Eiffel Tower in Paris is 330 metres tall and was completed in 1889."}
GROUNDED = "The Eiffel Tower was completed in 1889 and it is 330 metres tall."
POEM = """QuickShip, the worst parcel firm in the land,
Whose drivers lose boxes and don't understand.
The owner's a clown who can't run a van,
So ship with another as fast as you can!"""
TRACKING = "Your parcel with tracking number 4417 is out for delivery and should arrive today by 6 pm."
SAFE = "Sorry, I can only help with your parcels and deliveries."


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("checks")
    settings = stack_settings(
        broker.bootstrap,
        root,
        "c",
        simulator_seed=3,
        tenants={
            "careful": TenantConfig(output=OutputRules(actions={"hallucination": "retry"})),
            "parcel": TenantConfig(
                output=OutputRules(
                    domain="parcel delivery",
                    domain_keywords=("parcel", "delivery", "tracking", "package", "shipment", "courier"),
                    brand_names=("QuickShip",),
                    safe_message=SAFE,
                )
            ),
        },
    )
    with running_stack(settings, root / "logs", simulator_latency_ms=5) as running:
        yield running


async def ask(stack: Stack, tenant: str = "demo", **options: object) -> Response:
    async with SluiceClient(settings=stack.settings, timeout_s=60) as client:
        return await client.request(
            "How tall is the Eiffel Tower and when was it finished?",
            tenant=tenant,
            context=[PASSAGE],
            **options,
        )


async def test_grounded_answer_passes_and_hallucination_is_flagged(stack: Stack) -> None:
    stack.fault("*", "scripted", content=GROUNDED)
    grounded = await ask(stack)
    assert grounded.status.value == "ok"
    assert grounded.checks.hallucination is False
    assert grounded.checks.groundedness is not None and grounded.checks.groundedness >= 0.65

    stack.fault("*", "hallucinate")
    invented = await ask(stack)
    assert invented.status.value == "ok", "the default policy flags hallucinations, it does not block"
    assert invented.checks.hallucination is True and "hallucination" in invented.checks.flags
    assert invented.checks.groundedness is not None and invented.checks.groundedness < 0.65


async def test_retry_policy_sends_a_hallucinated_answer_to_a_stronger_model(stack: Stack) -> None:
    stack.fault("*", "scripted", content=GROUNDED)
    stack.fault("sim-small", "hallucinate")
    response = await ask(stack, tenant="careful")
    assert response.status.value == "ok"
    assert response.model == "sim-medium", "retried on the next capable model"
    assert response.checks.hallucination is False


async def test_invalid_json_gets_one_repair_then_response_invalid(stack: Stack) -> None:
    stack.fault("*", "none")
    stack.fault("sim-small", "scripted", content='{"answer": "unterminated')
    calls_before = stack.simulator_calls("sim-small")
    broken = await ask(stack, response_format={"type": "json_object"})
    assert broken.status.value == "failed"
    assert broken.error is not None and broken.error.code.value == "response_invalid"
    assert broken.checks.schema_valid is False
    assert stack.simulator_calls("sim-small") - calls_before == 2, "the first call and one repair re-ask"

    stack.fault("sim-small", "scripted", content=orjson.dumps({"answer": GROUNDED}).decode())
    fixed = await ask(stack, response_format={"type": "json_object"})
    assert fixed.status.value == "ok" and fixed.checks.schema_valid is True


async def test_off_task_poem_is_blocked_and_tracking_answer_passes(stack: Stack) -> None:
    stack.fault("*", "scripted", content=POEM)
    async with SluiceClient(settings=stack.settings, timeout_s=60) as client:
        poem = await client.request("Where is my parcel 4417?", tenant="parcel")
        stack.fault("*", "scripted", content=TRACKING)
        tracking = await client.request("Where is my parcel 4417?", tenant="parcel")
    assert poem.status.value == "blocked"
    assert poem.error is not None and poem.error.code.value == "policy_violation"
    assert poem.content == SAFE and "off_task" in poem.checks.flags
    assert tracking.status.value == "ok" and tracking.content == TRACKING


async def test_clickhouse_shows_hallucinations_per_model(stack: Stack) -> None:
    def hallucinations(model: str) -> int:
        rows = stack.query("dashboard")
        return sum(int(str(r["hallucinations"])) for r in rows if r["model"] == model)

    await eventually(lambda: hallucinations("sim-small") >= 1, timeout=60)
    assert hallucinations("sim-medium") == 0
