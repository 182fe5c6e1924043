"""The ClickHouse sink: mirrors the events, feedback and deadletter topics into the warehouse.

Event records are checked against the Event schema (`sluice.warehouse.records`, which also builds
the typed rows); a malformed one is dead-lettered with its reason. Those the schema accepts in
strict mode (every value already of its JSON type) are handed to the engine as they came, one
JSON object per line, into `events_json` (migrations 0008 and 0011): ClickHouse parses and
converts them, Python builds no columns. The few the schema accepts only by converting a value
(a number written as text, a time as a number) go in through the typed insert, so the engine
never has to guess. Should the engine refuse a JSON block, the batch goes in again through the
typed insert, so a record the schema accepts is never lost to a difference between the two
parsers.

Delivery is at-least-once end to end: offsets are committed only after the batch's rows
are inserted (and its dead letters published), so a crash or a failing warehouse
re-delivers instead of losing data. Re-delivery is harmless because rows go to
`<table>_incoming` (migration 0007), whose view stores only keys not stored yet: the raw
tables hold one copy per key and the rollups count it once.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from clickhouse_connect.driver.exceptions import DatabaseError

from schemas import DeadLetter, Event, Feedback
from sluice import kafka_clients
from sluice.bus import ensure_topics
from sluice.observability.prom import SINK_ROWS
from sluice.settings import Settings
from sluice.supervise import Supervisor
from sluice.warehouse.connection import Warehouse, aconnect
from sluice.warehouse.migrate import amigrate, migrations_dir
from sluice.warehouse.monitors import AlertEvaluator, FeedbackAdvisor, LagMonitor, apply_retention, every
from sluice.warehouse.query_server import start_query_server
from sluice.warehouse.records import (
    MALFORMED,
    STRICT,
    TABLE_COLUMNS,
    Row,
    check_event,
    columns_of,
    deadletter_row,
    event_row,
    feedback_row,
    parse,
    record_time,
    request_row,
)
from topics import DEADLETTER, EVENTS, FEEDBACK

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 10.0
POLL_MAX_S = 0.2  # longest getmany wait, so a stop request is noticed quickly
COMMIT_ATTEMPTS = 3

# Where the sink writes each table: the deduplicating entry points of migration 0007.
INSERT_TARGETS = {
    "events": "events_incoming",
    "requests": "requests_incoming",
    "feedback": "feedback_incoming",
    "deadletters": "deadletters",
}

# How the engine reads the event records (JSONEachRow into events_json): values of the wrong
# JSON type are refused rather than converted; the summary object is read into a typed tuple
# (migration 0011). The insert and its views run on one thread (`max_threads`: the duplicate
# lookups' subqueries would otherwise start a second one, on the core the check of the next
# batch needs). Parsing runs on the inserting thread (parallel parsing splits a large block
# into chunks and costs twice the CPU for it), and inserted blocks are not pre-merged (the views
# already group each block; a deduplicated raw table has no key twice in a block): measured in
# bench/analytics.py, each halves a cost.
EVENTS_JSON_TABLE = "events_json"
EVENTS_JSON_SETTINGS = {
    "input_format_skip_unknown_fields": 0,
    "input_format_json_read_numbers_as_strings": 0,
    "input_format_json_read_bools_as_numbers": 0,
    "input_format_json_read_bools_as_strings": 0,
    "input_format_json_read_arrays_as_strings": 0,
    "input_format_parallel_parsing": 0,
    "optimize_on_insert": 0,
    "max_threads": 1,
}


def insert_columns(warehouse: Warehouse, table: str, columns: list[list[Any]]) -> int:
    """Insert one table's values (one list per column of TABLE_COLUMNS[table]) through its
    deduplicating entry point; returns the rows sent. Blocking."""
    return warehouse.insert(INSERT_TARGETS[table], columns, TABLE_COLUMNS[table])


def insert_rows(warehouse: Warehouse, table: str, rows: list[Row]) -> int:
    """Insert one table's rows the way the sink does; the sink calls it in a worker thread."""
    return insert_columns(warehouse, table, columns_of(rows))


def insert_event_json(warehouse: Warehouse, lines: list[bytes]) -> None:
    """Event records, each one JSON object already checked against the Event schema, into the
    engine as one JSONEachRow block (blocking). The views of migration 0008 fill events and
    requests from it."""
    warehouse.insert_raw(EVENTS_JSON_TABLE, b"\n".join(lines), "JSONEachRow", EVENTS_JSON_SETTINGS)


def insert_events_typed(warehouse: Warehouse, lines: list[bytes]) -> None:
    """Insert event records the schema accepts through columns Python builds (blocking)."""
    events = [Event.model_validate_json(line) for line in lines]
    insert_rows(warehouse, "events", [event_row(event) for event in events])
    insert_rows(warehouse, "requests", [row for event in events if (row := request_row(event)) is not None])


def insert_events(warehouse: Warehouse, lines: list[bytes]) -> bool:
    """Insert checked event records; True when the engine refused the JSON block and the typed
    insert (Python-built columns) stored them instead. Either way the rows go through the
    deduplicating entry tables, so a block the engine stored in part is not counted twice.
    A failure of the typed insert propagates (the caller retries)."""
    try:
        insert_event_json(warehouse, lines)
        return False
    except DatabaseError as exc:
        log.warning("engine refused %d event records as JSON; inserting them typed: %s", len(lines), exc)
    insert_events_typed(warehouse, lines)
    return True


@dataclass
class SinkStats:
    """Counters of one sink process (exported as JSON at /stats; Prometheus later)."""

    rows_inserted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLE_COLUMNS, 0))
    records_consumed: int = 0
    batches: int = 0
    deadlettered: int = 0
    insert_failures: int = 0
    json_fallbacks: int = 0
    typed_records: int = 0  # accepted only with a converted value: inserted typed, not as JSON
    publish_failures: int = 0
    commit_failures: int = 0
    last_insert_latency_s: float = 0.0
    last_batch_records: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "rows_inserted": dict(self.rows_inserted),
            "records_consumed": self.records_consumed,
            "batches": self.batches,
            "deadlettered": self.deadlettered,
            "insert_failures": self.insert_failures,
            "json_fallbacks": self.json_fallbacks,
            "typed_records": self.typed_records,
            "publish_failures": self.publish_failures,
            "commit_failures": self.commit_failures,
            "last_insert_latency_s": self.last_insert_latency_s,
            "last_batch_records": self.last_batch_records,
        }


@dataclass
class Batch:
    """Records consumed since the last commit: checked event records as they came (JSON), the
    other topics' records as rows."""

    event_lines: list[bytes] = field(default_factory=list)
    typed_lines: list[bytes] = field(default_factory=list)  # accepted only in lax mode
    ended_requests: int = 0  # event records that carry a request summary (a `requests` row each)
    rows: dict[str, list[Row]] = field(default_factory=lambda: {table: [] for table in TABLE_COLUMNS})
    to_deadletter: list[DeadLetter] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next
    records: int = 0
    started: float = 0.0


def _count(stats: SinkStats, table: str, written: int) -> None:
    stats.rows_inserted[table] += written
    SINK_ROWS.labels(table).inc(written)


def write_batch(warehouse: Warehouse, batch: Batch, stats: SinkStats) -> None:
    """Insert a batch's rows: the event records (events and requests) first, then the other
    tables. What is stored is removed from the batch, so a retry after a failure re-inserts only
    what failed. Blocking: the sink runs it in a worker thread, the benchmark calls it as is."""
    if batch.event_lines:
        stats.json_fallbacks += insert_events(warehouse, batch.event_lines)
        _count(stats, "events", len(batch.event_lines))
        batch.event_lines = []
    if batch.typed_lines:
        insert_events_typed(warehouse, batch.typed_lines)
        stats.typed_records += len(batch.typed_lines)
        _count(stats, "events", len(batch.typed_lines))
        batch.typed_lines = []
    if batch.ended_requests:
        _count(stats, "requests", batch.ended_requests)
        batch.ended_requests = 0
    for table, rows in batch.rows.items():
        if rows:
            _count(stats, table, insert_rows(warehouse, table, rows))
            batch.rows[table] = []


class SinkRecord(NamedTuple):
    """What the sink reads of a consumed Kafka record (aiokafka's ConsumerRecord has these
    fields): benches and tests build these to drive the sink's own path without a broker."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: int


class Sink:
    """One consume -> insert -> commit loop over the three topics."""

    def __init__(
        self, settings: Settings, warehouse: Warehouse, stats: SinkStats, stop: asyncio.Event
    ) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self.stats = stats
        self.stop = stop
        self.events_topic = EVENTS.name(settings.topic_prefix)
        self.feedback_topic = FEEDBACK.name(settings.topic_prefix)
        self.deadletter_topic = DEADLETTER.name(settings.topic_prefix)
        self.consumer: Any = None
        self.producer: Any = None

    # --- parsing -------------------------------------------------------------------------
    def add(self, batch: Batch, record: Any) -> None:
        """Turn one Kafka record into rows (or a dead letter) and advance the batch's offsets."""
        if not batch.records:
            batch.started = time.monotonic()
        batch.records += 1
        # A plain tuple key: building a TopicPartition per record cost ~7% of the check.
        batch.offsets[(record.topic, record.partition)] = record.offset + 1
        if record.topic == self.events_topic:
            verdict, ends_request, reason = check_event(record.value)
            if verdict == MALFORMED:
                self._dead(batch, record, reason)
                return
            (batch.event_lines if verdict == STRICT else batch.typed_lines).append(record.value)
            batch.ended_requests += ends_request
        elif record.topic == self.feedback_topic:
            feedback, reason = parse(Feedback, record.value)
            if feedback is None:
                self._dead(batch, record, reason)
                return
            ts = record_time(record.timestamp)
            batch.rows["feedback"].append(feedback_row(feedback, record.partition, record.offset, ts))
        elif record.topic == self.deadletter_topic:
            self._mirror_deadletter(batch, record)

    def _dead(self, batch: Batch, record: Any, reason: str) -> None:
        log.warning("dead-lettering %s[%s]@%s: %s", record.topic, record.partition, record.offset, reason)
        batch.to_deadletter.append(
            DeadLetter(
                reason=reason,
                raw_base64=base64.b64encode(record.value or b"").decode("ascii"),
                source_topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                stage="sink",
                ts=datetime.now(UTC),
            )
        )

    def _mirror_deadletter(self, batch: Batch, record: Any) -> None:
        """Store a deadletter-topic record; one that is not a DeadLetter is stored as itself,
        never re-published (that would loop)."""
        letter, reason = parse(DeadLetter, record.value)
        if letter is None:
            log.warning(
                "storing bad record %s[%s]@%s: %s", record.topic, record.partition, record.offset, reason
            )
            letter = DeadLetter(
                reason=reason,
                raw_base64=base64.b64encode(record.value or b"").decode("ascii"),
                source_topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                stage="sink",
                ts=record_time(record.timestamp),
            )
        batch.rows["deadletters"].append(deadletter_row(letter))

    # --- writing -------------------------------------------------------------------------
    async def _retry(self, what: str, attempt: Callable[[], Awaitable[None]], failures: str) -> bool:
        """Run `attempt` until it succeeds (True) or the sink is asked to stop (False).
        Backoff doubles up to BACKOFF_MAX_S; the first attempt always runs."""
        delay = BACKOFF_START_S
        while True:
            try:
                await attempt()
                return True
            except Exception as exc:  # any failure of the warehouse/broker: retry, never drop
                setattr(self.stats, failures, getattr(self.stats, failures) + 1)
                log.warning("%s failed (retrying in %.1fs): %s", what, delay, exc, exc_info=True)
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=delay)
                log.warning("%s abandoned at shutdown; its records stay uncommitted", what)
                return False
            except TimeoutError:
                delay = min(delay * 2, BACKOFF_MAX_S)

    async def flush(self, batch: Batch) -> bool:
        """Insert, publish dead letters, then commit. False if stopped before the data was safe."""

        async def insert() -> None:
            started = time.monotonic()
            await asyncio.to_thread(write_batch, self.warehouse, batch, self.stats)
            self.stats.last_insert_latency_s = time.monotonic() - started

        async def publish() -> None:
            while batch.to_deadletter:
                letter = batch.to_deadletter[0]
                await self.producer.send_and_wait(self.deadletter_topic, letter.model_dump_json().encode())
                batch.to_deadletter.pop(0)
                self.stats.deadlettered += 1

        if not await self._retry("insert", insert, "insert_failures"):
            return False
        if not await self._retry("dead-letter publish", publish, "publish_failures"):
            return False
        await self._commit(batch)
        self.stats.batches += 1
        self.stats.last_batch_records = batch.records
        return True

    async def _commit(self, batch: Batch) -> None:
        """Commit the batch's positions. A failed commit only means re-delivery (deduplicated),
        so after a few attempts it is logged rather than blocking the sink."""
        owned = self.consumer.assignment()
        offsets = {
            tp: offset for key, offset in batch.offsets.items() if (tp := TopicPartition(*key)) in owned
        }
        if not offsets:
            return
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                await self.consumer.commit(offsets)
                return
            except CommitFailedError as exc:
                self.stats.commit_failures += 1
                log.warning("commit rejected by a rebalance; the new owner re-reads (deduplicated): %s", exc)
                return
            except KafkaError as exc:
                self.stats.commit_failures += 1
                log.warning("commit attempt %d/%d failed: %s", attempt, COMMIT_ATTEMPTS, exc)
                await asyncio.sleep(BACKOFF_START_S * attempt)

    # --- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume, check and insert. One batch's insert (a worker thread; the engine releases the
        GIL) overlaps the schema check of the next batch's records, so the two use both cores.
        At most one insert is in flight and batches are committed in order: a batch starts its
        insert only after the previous one was inserted and committed."""
        batch_size = max(1, self.settings.sink_batch_size)
        batch_seconds = max(0.01, self.settings.sink_batch_seconds)
        batch = Batch()
        inflight: asyncio.Task[bool] | None = None
        try:
            while not self.stop.is_set():
                due = await self._consume(batch, batch_size, batch_seconds)
                if due:
                    if inflight is not None and not await inflight:
                        return
                    inflight = asyncio.create_task(self.flush(batch))
                    batch = Batch()
            if inflight is not None and not await inflight:
                return
            inflight = None
            if batch.records:
                await self.flush(batch)  # one attempt: stop is already set
        finally:
            if inflight is not None and not inflight.done():
                inflight.cancel()

    async def _consume(self, batch: Batch, batch_size: int, batch_seconds: float) -> bool:
        """Fetch what is there (waiting at most until the batch is due) into `batch`; True when
        the batch is due for insert."""
        wait = batch_seconds - (time.monotonic() - batch.started) if batch.records else batch_seconds
        try:
            fetched = await self.consumer.getmany(
                timeout_ms=int(max(0.0, min(wait, POLL_MAX_S)) * 1000),
                max_records=batch_size - batch.records,
            )
        except KafkaError as exc:
            log.warning("fetch failed: %s", exc)
            await asyncio.sleep(BACKOFF_START_S)
            return False
        for records in fetched.values():
            for record in records:
                self.add(batch, record)
            self.stats.records_consumed += len(records)
        due = batch.records >= batch_size or time.monotonic() - batch.started >= batch_seconds
        return bool(batch.records) and due


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    """Sets `ready` after the first assignment (possibly empty when sinks outnumber partitions)."""

    def __init__(self, ready: asyncio.Event) -> None:
        self.ready = ready

    async def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("partitions revoked: %d", len(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned: %d", len(assigned))
        self.ready.set()


@dataclass
class Monitors:
    """The sink's periodic jobs (sluice.warehouse.monitors), run beside the loop under one
    supervisor: a job that dies is logged, shown on readiness and restarted with backoff."""

    supervisor: Supervisor
    lag: LagMonitor
    http: httpx.AsyncClient
    alerts: AlertEvaluator
    advisor: FeedbackAdvisor

    @classmethod
    async def start(
        cls, settings: Settings, warehouse: Warehouse, producer: Any, stop: asyncio.Event
    ) -> Monitors:
        lag = LagMonitor(settings)
        await lag.start()
        http = httpx.AsyncClient(timeout=settings.alert_webhook_timeout_s)
        alerts = AlertEvaluator(settings, warehouse, producer, lag, http)
        advisor = FeedbackAdvisor(settings, warehouse, producer)
        await advisor.load()
        jobs = (
            (settings.lag_interval_s, lag.measure, "consumer lag"),
            (settings.alert_interval_s, alerts.evaluate, "alert evaluation"),
            (settings.feedback_interval_s, advisor.evaluate, "route advice"),
        )
        supervisor = Supervisor("sink")
        for interval, job, what in jobs:
            loop = partial(every, interval, stop, job, what)
            supervisor.supervise(what.replace(" ", "_"), loop, done=stop.is_set)
        await supervisor.start()
        return cls(supervisor, lag, http, alerts, advisor)

    async def stop(self) -> None:
        await self.supervisor.stop()
        await self.lag.stop()
        await self.http.aclose()


def events_consumer(settings: Settings) -> AIOKafkaConsumer:
    """The sink's consumer: offsets committed by hand after each insert, and a long fetch wait,
    since each fetch costs the embedded broker work that grows with the topic."""
    return kafka_clients.consumer(
        settings,
        group_id=settings.sink_group,
        client_id="sluice-sink",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.sink_fetch_wait_ms,
        session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.broker_heartbeat_interval_s * 1000),
        rebalance_timeout_ms=int(settings.broker_rebalance_timeout_s * 1000),
    )


async def run_sink(
    settings: Settings,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    stats: SinkStats | None = None,
) -> None:
    """Run the sink until `stop` is set (or the task is cancelled).

    `ready` is set once migrations are applied, the query server answers and the consumer
    has its partitions. On a clean stop the pending batch gets one last flush.
    """
    stop = stop or asyncio.Event()
    ready = ready or asyncio.Event()
    stats = stats or SinkStats()
    await ensure_topics(settings)
    warehouse = await aconnect(settings)
    server = consumer = producer = None
    monitors: Monitors | None = None
    try:
        await amigrate(warehouse, migrations_dir(settings))
        await apply_retention(warehouse, settings)
        server = await start_query_server(settings, warehouse, stats.snapshot)
        sink = Sink(settings, warehouse, stats, stop)
        producer = kafka_clients.producer(settings, client_id="sluice-sink", acks="all")
        await producer.start()
        consumer = events_consumer(settings)
        consumer.subscribe(
            [sink.events_topic, sink.feedback_topic, sink.deadletter_topic], listener=_Assigned(ready)
        )
        await consumer.start()
        sink.consumer, sink.producer = consumer, producer
        monitors = await Monitors.start(settings, warehouse, producer, stop)
        log.info("sink consuming %s into database %s", settings.topic_prefix + "*", warehouse.database)
        await sink.run()
    finally:
        if monitors is not None:
            await monitors.stop()
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()
        if server is not None:
            await server.stop()
        await warehouse.aclose()


def main(settings: Settings) -> None:
    """`sluice sink`: run until SIGINT/SIGTERM; a second signal abandons the last flush."""

    async def supervise() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_sink(settings, stop=stop))
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                task.cancel()
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
        try:
            await task
        except asyncio.CancelledError:
            log.warning("sink stopped without its final flush")
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    asyncio.run(supervise())
