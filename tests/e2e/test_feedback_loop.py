"""The whole feedback loop through real processes: users rate one model's answers on one route
badly, the sink's feedback evaluator turns the ratings (joined to the requests in ClickHouse)
into advice, and the worker's router moves that route's traffic to another model, saying why."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import orjson
import pytest

from schemas import Feedback
from sluice.edge.client import SluiceClient
from sluice.local.broker import EmbeddedBroker
from tests.e2e.stack import Stack, publish_raw, read_topic, running_stack, stack_settings
from topics import EVENTS, FEEDBACK

pytestmark = pytest.mark.e2e

QUESTIONS = [f"What is the capital of country number {n}?" for n in range(6)]
BOUND_S = 120.0  # an upper bound for the loop to close; never a timing assertion


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("feedback-loop")
    settings = stack_settings(
        broker.bootstrap,
        root,
        "fl",
        feedback_interval_s=0.5,
        feedback_min_samples=4,
        feedback_window_minutes=30,
    )
    with running_stack(settings, root / "logs") as running:
        yield running


async def test_negative_feedback_shifts_the_routes_traffic_with_the_reason_recorded(stack: Stack) -> None:
    settings = stack.settings
    async with SluiceClient(settings=settings, timeout_s=60) as client:
        first = [await client.request(question, max_tokens=32) for question in QUESTIONS]
        assert {(answer.status.value, answer.model) for answer in first} == {("ok", "sim-small")}

        ratings = [
            (
                answer.request_id.encode(),
                orjson.dumps(
                    Feedback(
                        request_id=answer.request_id, tenant=answer.tenant, rating=-1, label="unhelpful"
                    ).model_dump()
                ),
            )
            for answer in first
        ]
        await publish_raw(settings.bootstrap, FEEDBACK.name(settings.topic_prefix), ratings)

        deadline = time.monotonic() + BOUND_S
        shifted = None
        while time.monotonic() < deadline:
            answer = await client.request("What is the capital of Peru?", max_tokens=32)
            if answer.model != "sim-small":
                shifted = answer
                break
            await asyncio.sleep(0.5)
    assert shifted is not None, "the route's traffic never left the badly rated model"
    assert shifted.status.value == "ok" and shifted.model == "sim-medium"

    events = await read_topic(settings.bootstrap, EVENTS.name(settings.topic_prefix))
    route_events = [
        orjson.loads(value or b"{}")
        for _, value, _, _ in events
        if b'"stage":"route"' in (value or b"") and shifted.request_id.encode() in (value or b"")
    ]
    assert route_events, "no route event for the shifted request"
    reason = route_events[0]["attributes"]["route_reason"]
    assert "feedback" in reason and "sim-small" in reason and "demoted" in reason, reason
