"""The sink on the real broker: rows land, redelivery does not double count, garbage is
dead-lettered, and offsets are committed only after the rows are in ClickHouse."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas import DeadLetter, Event, Feedback, RequestSummary, Stage, Status
from sluice.bus import ensure_topics
from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse, connect
from sluice.warehouse.queries import SinkReader, open_for_reading, sink_file
from tests.e2e.stack import running_sink
from topics import DEADLETTER, EVENTS, FEEDBACK

pytestmark = pytest.mark.e2e

TIMEOUT_S = 15.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture()
def warehouse(live_settings: Settings) -> Iterator[Warehouse]:
    client = connect(live_settings)
    yield client
    client.close()


def make_events(count: int, shift: timedelta = timedelta(0)) -> list[Event]:
    """`count` requests through three stages; the last event of each carries the summary."""
    received = datetime.now(UTC) - timedelta(seconds=10) + shift
    events = []
    for n in range(count):
        rid = f"req-{n}"
        for i, stage in enumerate((Stage.VALIDATE, Stage.INFER, Stage.VALIDATE_RESPONSE)):
            last = stage is Stage.VALIDATE_RESPONSE
            ts = received + timedelta(milliseconds=100 * (i + 1))
            events.append(
                Event(
                    event_id=f"{rid}/{stage.value}",
                    request_id=rid,
                    correlation_id=f"corr-{n}",
                    tenant="acme",
                    stage=stage,
                    status="ok",
                    ts=ts,
                    duration_ms=10.0 * (i + 1),
                    model=None if stage is Stage.VALIDATE else "sim-small",
                    prompt_tokens=7 if last else 0,
                    completion_tokens=11 if last else 0,
                    cost_usd=0.002 if last else 0.0,
                    summary=RequestSummary(
                        received_at=received, finished_at=ts, status=Status.OK, latency_ms=300.0
                    )
                    if last
                    else None,
                )
            )
    return events


async def publish(settings: Settings, records: Sequence[tuple[str, bytes, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        for topic, value, key in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def event_records(settings: Settings, events: list[Event]) -> list[tuple[str, bytes, bytes | None]]:
    topic = EVENTS.name(settings.topic_prefix)
    return [(topic, e.model_dump_json().encode(), e.correlation_id.encode()) for e in events]


async def count(warehouse: Warehouse, table: str, final: bool = True) -> int:
    rows = await warehouse.aquery(f"SELECT count() AS n FROM {{db}}.{table}{' FINAL' if final else ''}")
    return int(rows[0]["n"])


async def counts(warehouse: Warehouse) -> dict[str, int]:
    return {t: await count(warehouse, t) for t in ("events", "requests", "feedback", "deadletters")}


async def committed_vs_end(settings: Settings, topic: str) -> list[tuple[int | None, int]]:
    """(committed offset of the sink's group, end offset) for every partition of `topic`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=settings.sink_group)
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or set())
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
        return [(await consumer.committed(tp), ends[tp]) for tp in tps]
    finally:
        await consumer.stop()


async def read_topic(settings: Settings, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found: list[Any] = []
        while batch := await consumer.getmany(timeout_ms=500):
            found.extend(record for records in batch.values() for record in records)
        return found
    finally:
        await consumer.stop()


async def test_sink_mirrors_dedupes_and_deadletters(live_settings: Settings, warehouse: Warehouse) -> None:
    settings = live_settings.with_overrides(sink_batch_seconds=0.1)
    await ensure_topics(settings)
    events = make_events(3)
    feedback = [Feedback(request_id="req-0", tenant="acme", rating=r, label="good") for r in (1, -1)]
    fb_topic, dl_topic = FEEDBACK.name(settings.topic_prefix), DEADLETTER.name(settings.topic_prefix)
    await publish(
        settings,
        [
            *event_records(settings, events),
            *((fb_topic, f.model_dump_json().encode(), None) for f in feedback),
            (EVENTS.name(settings.topic_prefix), b"not json at all", b"k"),
            (dl_topic, b"\x00 not a dead letter", None),
        ],
    )
    expected = {"events": 9, "requests": 3, "feedback": 2, "deadletters": 2}

    async with running_sink(settings) as stats:
        assert sink_file(settings).exists()

        async def all_rows() -> bool:
            return await counts(warehouse) == expected

        await eventually(all_rows, "every table to be filled")
        with await asyncio.to_thread(open_for_reading, settings) as reader:  # through the sink
            assert isinstance(reader, SinkReader)
            rows = await asyncio.to_thread(reader.rows, "dashboard", 60)
        assert [(r["model"], r["requests"], r["ok"]) for r in rows] == [("sim-small", 3, 3)]

        # Redelivery: the same events again, re-processed (later ts), must replace, not add.
        await publish(settings, event_records(settings, make_events(3, shift=timedelta(seconds=1))))

        async def redelivered() -> bool:
            return stats.rows_inserted["events"] >= 18

        await eventually(redelivered, "redelivered events to be inserted")
        assert await counts(warehouse) == expected
        assert await count(warehouse, "events", final=False) >= 9  # copies exist until merged

    assert not sink_file(settings).exists()
    # Every consumed record is committed, and only after it was inserted (see the next test).
    for topic in (EVENTS, FEEDBACK, DEADLETTER):
        for committed, end in await committed_vs_end(settings, topic.name(settings.topic_prefix)):
            assert committed == (end if end else None)

    letters = await read_topic(settings, dl_topic)
    assert len(letters) == 2, "the sink publishes one dead letter and never re-publishes bad ones"
    published = DeadLetter.model_validate_json(next(r.value for r in letters if r.value.startswith(b"{")))
    assert published.stage == "sink"
    assert published.source_topic == EVENTS.name(settings.topic_prefix)
    assert base64.b64decode(published.raw_base64) == b"not json at all"
    stored = {
        row["source_topic"]: row
        for row in await warehouse.aquery("SELECT reason, stage, source_topic FROM {db}.deadletters FINAL")
    }
    assert set(stored) == {EVENTS.name(settings.topic_prefix), dl_topic}
    assert stored[dl_topic]["reason"].startswith("unparseable DeadLetter")
    assert stored[EVENTS.name(settings.topic_prefix)]["reason"].startswith("unparseable Event")
    assert stats.deadlettered == 1

    # A new consumer group re-reads everything (redelivery of the same records): no change.
    again = settings.with_overrides(sink_group=settings.sink_group + "-again")
    async with running_sink(again) as stats_again:

        async def reread() -> bool:
            return stats_again.rows_inserted["events"] >= 18 and stats_again.rows_inserted["deadletters"] >= 3

        await eventually(reread, "the second group to re-read every topic")
        assert await counts(warehouse) == expected


async def test_offsets_wait_for_a_successful_insert(
    live_settings: Settings, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = live_settings.with_overrides(sink_batch_size=100, sink_batch_seconds=0.05)
    await ensure_topics(settings)
    failing = True
    real_insert, real_insert_raw = Warehouse.insert, Warehouse.insert_raw

    def flaky_insert(self: Warehouse, table: str, columns: Any, column_names: Any) -> int:
        if failing and not table.startswith("schema_migration"):
            raise ConnectionError("warehouse down (test)")
        return real_insert(self, table, columns, column_names)

    def flaky_insert_raw(self: Warehouse, table: str, data: bytes, fmt: str, settings: Any) -> None:
        if failing:  # the event records' JSON path fails the same way
            raise ConnectionError("warehouse down (test)")
        real_insert_raw(self, table, data, fmt, settings)

    monkeypatch.setattr(Warehouse, "insert", flaky_insert)
    monkeypatch.setattr(Warehouse, "insert_raw", flaky_insert_raw)
    await publish(settings, event_records(settings, make_events(2)))
    topic = EVENTS.name(settings.topic_prefix)

    async with running_sink(settings) as stats:

        async def failed_twice() -> bool:
            return stats.insert_failures >= 2

        await eventually(failed_twice, "insert retries")
        assert all(committed is None for committed, _ in await committed_vs_end(settings, topic))
        assert await count(warehouse, "events", final=False) == 0
        failing = False

        async def inserted() -> bool:
            return await count(warehouse, "events") == 6

        await eventually(inserted, "the retried insert")

        async def committed() -> bool:
            return all(c == (end or None) for c, end in await committed_vs_end(settings, topic))

        await eventually(committed, "offsets committed after the insert")
    assert stats.rows_inserted["events"] == 6 and stats.rows_inserted["requests"] == 2
