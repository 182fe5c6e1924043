"""Route advice on the real broker: every follower (a second worker, a restarted one) reads the
compacted topic from its start, so they all route with the same, newest advice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from agents.routing.advice import AdviceBook
from agents.routing.feed import follow_route_advice
from agents.routing.router import decide
from schemas import Request, RouteAdvice, RouteDecision
from sluice.bus import ensure_topics
from sluice.codec import encode
from sluice.providers.catalog import BUILTIN_CATALOG
from sluice.settings import Settings
from tests.e2e.stack import eventually, publish_raw
from topics import ROUTE_ADVICE

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def advice(model: str, demote: bool, minutes: int) -> RouteAdvice:
    return RouteAdvice(
        route="simple",
        model=model,
        demote=demote,
        satisfaction=-0.5 if demote else 0.3,
        samples=25,
        reason="e2e",
        ts=T0 + timedelta(minutes=minutes),
    )


@asynccontextmanager
async def following(settings: Settings, topic: str) -> AsyncIterator[AdviceBook]:
    book = AdviceBook()
    task = asyncio.create_task(follow_route_advice(settings, topic, book, retry_s=0.5))
    try:
        yield book
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_every_follower_replays_the_newest_advice(live_settings: Settings) -> None:
    await ensure_topics(live_settings)
    topic = ROUTE_ADVICE.name(live_settings.topic_prefix)
    key = b"simple|sim-small"
    await publish_raw(
        live_settings.bootstrap,
        topic,
        [
            (key, encode(advice("sim-small", demote=False, minutes=0))),
            (b"simple|sim-medium", b"not json at all"),
            (key, encode(advice("sim-small", demote=True, minutes=5))),
        ],
    )
    request = Request(
        correlation_id="c", tenant="t", messages=[{"role": "user", "content": "What is Kafka?"}]
    )
    async with following(live_settings, topic) as first, following(live_settings, topic) as second:
        await eventually(lambda: first.demotion("simple", "sim-small") is not None, timeout=30)
        await eventually(lambda: second.demotion("simple", "sim-small") is not None, timeout=30)
        decision = decide(request, "req-1", BUILTIN_CATALOG, advice=first)
        assert isinstance(decision, RouteDecision) and decision.model == "sim-medium"
        assert "feedback: sim-small demoted on route 'simple'" in decision.reason
        # the evaluator withdraws the advice: a tombstone on the compacted topic
        await publish_raw(live_settings.bootstrap, topic, [(key, None)])  # type: ignore[list-item]
        await eventually(lambda: first.get("simple", "sim-small") is None, timeout=30)
    # a worker started later replays everything up to a marker published after the tombstone
    await publish_raw(live_settings.bootstrap, topic, [(b"simple|m", encode(advice("m", False, 9)))])
    async with following(live_settings, topic) as restarted:
        await eventually(lambda: restarted.get("simple", "m") is not None, timeout=30)
        assert restarted.get("simple", "sim-small") is None and len(restarted) == 1
