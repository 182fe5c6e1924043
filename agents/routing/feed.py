"""Keep an AdviceBook up to date from the compacted route-advice topic.

Every worker reads the whole topic from its beginning with a group-less consumer: a consumer
group (what a Faust agent uses) would hand the topic's one partition to a single worker, and
its committed offsets would leave a restarted worker with an empty book until the evaluator
next published. Reading a compacted topic from the start replays exactly the newest advice per
(route, model), so every worker, fresh or restarted, routes with the same advice.

The follower runs under a supervisor (sluice.supervise): a broker error or a bug that kills it
is logged, shows on readiness (`sluice.supervise.all_readiness`) and restarts it with backoff."""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiokafka import TopicPartition
from pydantic import ValidationError

from agents.routing.advice import AdviceBook
from schemas import RouteAdvice
from sluice import kafka_clients
from sluice.codec import decode
from sluice.settings import Settings
from sluice.supervise import run_supervised

log = logging.getLogger("sluice.route_advice")

POLL_MS = 1000
RETRY_S = 2.0


def apply_record(book: AdviceBook, key: bytes | None, value: bytes | None) -> str:
    """Fold one record into the book; returns what happened (logged, and asserted by tests).
    A tombstone (no value) withdraws the advice of its key; unreadable records are skipped."""
    if value is None:
        if key is None:
            return "skipped: tombstone without a key"
        route, _, model = key.decode("utf-8", "replace").partition("|")
        return "withdrawn" if book.forget(route, model) else "skipped: nothing to withdraw"
    try:
        advice = RouteAdvice.model_validate(decode(value))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        return f"skipped: not a valid RouteAdvice ({type(exc).__name__})"
    return "applied" if book.update(advice) else "skipped: older than known advice"


async def follow_route_advice(
    settings: Settings, topic: str, book: AdviceBook, retry_s: float = RETRY_S
) -> None:
    """Read `topic` from the beginning and keep following it until cancelled. A death (broker
    error or bug) restarts the read from the beginning after a backoff starting at `retry_s`
    (replaying is harmless: newest wins). `settings` give the bootstrap and security options."""
    await run_supervised(
        "route_advice", lambda: _follow(settings, topic, book), base_s=retry_s, max_s=max(retry_s, 30.0)
    )


async def _follow(settings: Settings, topic: str, book: AdviceBook) -> None:
    consumer = kafka_clients.consumer(
        settings,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="sluice-route-advice",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:  # created by `sluice up` / ensure_topics; wait rather than fail the worker
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await asyncio.sleep(1.0)
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        while True:
            batches = await consumer.getmany(timeout_ms=POLL_MS)
            for records in batches.values():
                for record in records:
                    outcome = apply_record(book, record.key, record.value)
                    log.info("route advice at %s@%d: %s", record.topic, record.offset, outcome)
    finally:
        await consumer.stop()
