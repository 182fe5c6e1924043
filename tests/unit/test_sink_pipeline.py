"""The sink's loop overlaps one batch's insert with checking the next batch's records, without
giving up at-least-once: one insert in flight, offsets committed in order and only after their
batch is stored. Driven with a stand-in consumer and warehouse (no broker, no engine)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition

from schemas import Event, Stage
from sluice.settings import Settings
from sluice.warehouse.sink import Sink, SinkRecord, SinkStats, events_consumer

BATCH = 3
BATCHES = 3


def record(topic: str, offset: int) -> SinkRecord:
    event = Event(
        event_id=f"r{offset}/validate",
        request_id=f"r{offset}",
        correlation_id=f"r{offset}",
        tenant="acme",
        stage=Stage.VALIDATE,
        status="ok",
        ts=datetime.now(UTC),
    )
    return SinkRecord(topic, 0, offset, event.model_dump_json().encode(), 0)


class Warehouse:
    """Takes the JSON blocks; the first insert waits until the test lets it finish."""

    def __init__(self) -> None:
        self.blocks: list[int] = []  # records per insert, in order
        self.started = threading.Event()
        self.release = threading.Event()

    def insert_raw(self, table: str, data: bytes, fmt: str, settings: Mapping[str, Any]) -> None:
        self.started.set()
        assert self.release.wait(10), "the test never released the first insert"
        self.blocks.append(data.count(b"\n") + 1)


class Consumer:
    """Hands out BATCH records per fetch; notes whether a fetch happened while an insert ran."""

    def __init__(self, sink: Sink, warehouse: Warehouse) -> None:
        self.sink = sink
        self.warehouse = warehouse
        self.tp = TopicPartition(sink.events_topic, 0)
        self.pending = [record(sink.events_topic, n) for n in range(BATCH * BATCHES)]
        self.commits: list[tuple[int, list[int]]] = []  # (offset committed, inserts done by then)
        self.fetched_during_insert = False

    def assignment(self) -> set[TopicPartition]:
        return {self.tp}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append((offsets[self.tp], list(self.warehouse.blocks)))

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[SinkRecord]]:
        if not self.warehouse.release.is_set() and len(self.pending) < BATCH * BATCHES:
            # The first batch went out: once its insert runs, this fetch happens during it.
            await asyncio.to_thread(self.warehouse.started.wait, 10)
            self.fetched_during_insert = not self.warehouse.blocks
            self.warehouse.release.set()
        if not self.pending:
            if len(self.commits) == BATCHES:
                self.sink.stop.set()
            await asyncio.sleep(0.01)
            return {}
        taken, self.pending = self.pending[:max_records], self.pending[max_records:]
        return {self.tp: taken}


async def test_the_next_batch_is_checked_while_the_previous_one_is_inserted() -> None:
    warehouse = Warehouse()
    settings = Settings(sink_batch_size=BATCH, sink_batch_seconds=60)
    sink = Sink(settings, warehouse, SinkStats(), asyncio.Event())  # type: ignore[arg-type]
    consumer = Consumer(sink, warehouse)
    sink.consumer = consumer
    await asyncio.wait_for(sink.run(), timeout=20)
    assert consumer.fetched_during_insert  # batch 2 was fetched and checked during batch 1's insert
    assert warehouse.blocks == [BATCH] * BATCHES
    # In order, each only after its own batch (and every earlier one) was stored.
    assert consumer.commits == [(BATCH * (n + 1), [BATCH] * (n + 1)) for n in range(BATCHES)]
    assert sink.stats.records_consumed == BATCH * BATCHES


async def test_the_sink_fetch_waits_as_configured() -> None:
    """The sink's fetch wait comes from settings (each fetch costs the embedded broker work that
    grows with the topic), and the offsets stay committed by hand, after each insert."""
    consumer = events_consumer(Settings(sink_fetch_wait_ms=1234, kafka_bootstrap="127.0.0.1:9"))
    assert consumer._fetch_max_wait_ms == 1234
    assert consumer._enable_auto_commit is False
    assert Settings().sink_fetch_wait_ms == 1000
