"""The Faust app and the runtime every stage agent shares: typed topics, the idempotence tables,
and one way to publish a stage's outcome (event, forward or final response, dead letters)."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from faust.sensors.monitor import Monitor
from faust.types import TopicT

from schemas import Admission, DeadLetter, Envelope, Event
from sluice.codec import CODEC_NAME, Poison, WireSchema, encode
from sluice.kafka_transport import broker_url
from sluice.outcome import Outcome, settlement_of, utcnow
from sluice.settings import Settings
from topics import (
    ADMISSION,
    DEADLETTER,
    EVENTS,
    INFERRED,
    REQUESTS,
    RESPONSES,
    ROUTED,
    SANITIZED,
    VALIDATED,
    TopicSpec,
)

log = logging.getLogger("sluice.app")

ENVELOPE_TOPICS: tuple[TopicSpec, ...] = (VALIDATED, SANITIZED, ROUTED, INFERRED)


class QuietMonitor(Monitor):
    """Faust's default Monitor times every message at every hop (a measurable share of the
    worker's CPU); Sluice records its own stage timings in events, so the per-message hooks are
    no-ops. Offsets, commits and rebalances are still tracked."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None


def create_app(settings: Settings) -> faust.App:
    """A Faust app tuned for seconds-long model calls and a fast group join on small clusters."""
    datadir = settings.worker_datadir or settings.home / "worker"
    return faust.App(
        settings.app_id,
        broker=broker_url(settings.bootstrap, settings.consumer_fetch_wait_ms),
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        autodiscover=False,
        topic_replication_factor=settings.topic_replication_factor,
        topic_partitions=settings.topic_layout.partitions_of(REQUESTS),
        table_standby_replicas=settings.table_standby_replicas,
        processing_guarantee=settings.processing_guarantee,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_commit_interval=settings.broker_commit_interval_s,
        producer_linger=settings.producer_linger_ms / 1000,
        stream_buffer_maxsize=max(4096, settings.infer_max_in_flight * 2),
        value_serializer=CODEC_NAME,
        key_serializer="raw",
        monitor=QuietMonitor(),
    )


def _table_schema() -> faust.Schema:
    """Idempotence tables: str keys, small JSON dict values."""
    return faust.Schema(key_type=str, key_serializer="raw", value_serializer=CODEC_NAME)


class Pipeline:
    """Everything the stage agents need, built once per worker process."""

    def __init__(self, settings: Settings, app: faust.App) -> None:
        self.settings = settings
        self.app = app
        prefix = settings.topic_prefix
        partitions = settings.topic_layout.partitions_of
        self.requests: TopicT = app.topic(
            REQUESTS.name(prefix),
            key_type=bytes,
            value_type=bytes,
            value_serializer="raw",
            partitions=partitions(REQUESTS),
        )
        self.envelopes: dict[TopicSpec, TopicT] = {
            spec: app.topic(spec.name(prefix), schema=WireSchema(Envelope), partitions=partitions(spec))
            for spec in ENVELOPE_TOPICS
        }
        self.envelope_names = {spec: spec.name(prefix) for spec in ENVELOPE_TOPICS}
        self.events_name = EVENTS.name(prefix)
        self.deadletters_name = DEADLETTER.name(prefix)
        self.default_reply_to = RESPONSES.name(prefix)
        # (tenant/correlation_id) -> {"request_id", "at", "p"}: client retries are not answered twice.
        self.seen = app.Table("seen", default=None, schema=_table_schema(), partitions=partitions(REQUESTS))
        # correlation_id -> the Response sent on the default reply topic. That topic IS this table's
        # changelog, so the response and the record that it was sent are one write: a worker
        # killed at any point can neither lose the answer nor send it twice after recovery.
        self.replies = app.Table(
            "replies",
            default=None,
            schema=_table_schema(),
            partitions=partitions(RESPONSES),
            changelog_topic=app.topic(
                self.default_reply_to, schema=_table_schema(), partitions=partitions(RESPONSES)
            ),
        )
        # request_id -> {"at", "p"} for answers sent to a client's own reply_to topic; marked right
        # after sending, so a crash in between can at worst repeat such an answer, never lose it.
        self.answered = app.Table(
            "answered", default=None, schema=_table_schema(), partitions=partitions(REQUESTS)
        )
        # tenant/<hash of the normalised request> -> a cached answer (agents/inference/cache.py).
        # Writes go to the changelog partition of the record being handled, and a worker only
        # restores the partitions it is assigned: with several workers a lookup can miss an
        # entry another worker wrote (a miss, never a wrong answer).
        self.cache = app.Table("cache", default=None, schema=_table_schema(), partitions=partitions(ROUTED))
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        # --- quotas: the admission topic (keyed by tenant) and the admit step's table ---------
        self.admission: TopicT = app.topic(
            ADMISSION.name(prefix), schema=WireSchema(Admission), partitions=partitions(ADMISSION)
        )
        self.admission_name = ADMISSION.name(prefix)
        # "t:<tenant>" -> usage (window, spend, reservations); "h:<request_id>" -> that request's
        # hold. Written only while handling an admission record, so the changelog partition is
        # the tenant's. See agents/admission.py.
        self.quota = app.Table(
            "quota", default=None, schema=_table_schema(), partitions=partitions(ADMISSION)
        )
        # --- end quotas ----------------------------------------------------------------------
        # Monitoring hook: called with every event after it is published (Prometheus counters).
        self.event_observers: list[Callable[[Event], None]] = []

    def envelope_topic(self, spec: TopicSpec) -> TopicT:
        return self.envelopes[spec]

    def remember(self, table: Any, key: str, **fields: Any) -> None:
        """Write a table entry, noting its partition so the expiry sweep can tombstone it."""
        table[key] = {"at": time.time(), "p": _current_partition(), **fields}

    async def send(
        self, topic: str, key: bytes, value: Any, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Encode with the one codec and hand straight to the producer. Faust's Topic.send wraps
        every message in channel futures and callbacks; skipping that halves the send cost, and
        Faust still flushes this producer before it commits offsets."""
        await self.app.producer.send(topic, key, encode(value), None, None, headers)

    def already_answered(self, correlation_id: str, request_id: str) -> bool:
        reply = self.replies.data.get(correlation_id)
        if isinstance(reply, Mapping) and reply.get("request_id") == request_id:
            return True
        return self.answered.data.get(request_id) is not None

    async def publish(self, outcome: Outcome, next_topic: TopicSpec | None = None) -> None:
        """Send what a stage decided. A final response is sent at most once per request_id."""
        key = outcome.event.correlation_id.encode()
        response = outcome.response
        if response is not None:
            if self.already_answered(response.correlation_id, response.request_id):
                log.info("request %s was already answered; dropping redelivered outcome", response.request_id)
                return
            reply_to = outcome.reply_to or self.default_reply_to
            headers = [("correlation_id", key)]
            if reply_to == self.default_reply_to:
                # Claimed before the first await, so concurrent copies cannot both send.
                self.replies.data[response.correlation_id] = {
                    "request_id": response.request_id,
                    "at": time.time(),
                }
                await self.settle(outcome)
                await self.send(reply_to, key, response, headers)
            else:
                mark = {"at": time.time(), "p": _current_partition()}
                self.answered.data[response.request_id] = mark
                await self.settle(outcome)
                await self.send(reply_to, key, response, headers)
                self.answered.send_changelog(mark["p"], response.request_id, mark)
        elif outcome.forward is not None:
            if next_topic is None:
                raise ValueError("a forwarding outcome needs the next stage's topic")
            if next_topic is ADMISSION:  # quotas: re-keyed by tenant, so its decisions are ordered
                admission = Admission(request=outcome.forward)
                await self.send(self.admission_name, outcome.forward.tenant.encode(), admission)
            else:
                await self.send(self.envelope_names[next_topic], key, outcome.forward)
        await self.send(self.events_name, key, outcome.event)
        for observe in self.event_observers:
            observe(outcome.event)

    # --- quotas ------------------------------------------------------------------------------
    def has_quota(self, tenant: str) -> bool:
        """Tenants with a rate limit or budget pass the admit step; the rest skip its hop."""
        return self.settings.tenant(tenant).quota.limited

    async def settle(self, outcome: Outcome) -> None:
        """Before a final response goes out: release the request's quota reservation and book
        its actual cost, on the tenant's admission partition (after its admission). Sent before
        the response, so a crash in between repeats it (the admit step ignores repeats) rather
        than leaving the reservation held."""
        if outcome.response is None or not self.has_quota(outcome.response.tenant):
            return  # most tenants have no limits: nothing to settle, nothing to build
        settlement = settlement_of(outcome)
        if settlement is not None:
            await self.send(self.admission_name, settlement.tenant.encode(), Admission(settlement=settlement))

    # --- end quotas ----------------------------------------------------------------------------

    async def dead_letter(self, letter: DeadLetter) -> None:
        log.warning(
            "dead-lettered %s[%d]@%d: %s", letter.source_topic, letter.partition, letter.offset, letter.reason
        )
        await self.send(self.deadletters_name, f"{letter.source_topic}:{letter.partition}".encode(), letter)

    async def dead_letter_poison(self, poison: Poison, stage: str) -> None:
        """A typed-topic record that is not a valid message: park it with its reason."""
        event = faust.current_event()
        message = event.message if event is not None else None
        await self.dead_letter(
            DeadLetter(
                reason=poison.reason,
                raw_base64=base64.b64encode(poison.raw).decode("ascii"),
                source_topic=message.topic if message else "",
                partition=message.partition if message else -1,
                offset=message.offset if message else -1,
                stage=stage,
                ts=utcnow(),
            )
        )

    def sweep(self, table: Any, window_s: float, *, tombstones: bool = True) -> int:
        """Forget entries older than the window. Tombstones keep a changelog small too; the
        replies table must not write them (its changelog is the clients' reply topic, which
        its own retention bounds)."""
        now = time.time()
        expired = []
        for key, value in list(table.data.items()):
            if isinstance(value, dict) and value.setdefault("at", now) < now - window_s:
                expired.append((key, value))
        for key, value in expired:
            table.data.pop(key, None)
            if tombstones:
                table.send_changelog(int(value.get("p", 0)), key, None)
        return len(expired)


def current_partition() -> int:
    """The partition of the record the running agent (or a task it spawned) is handling."""
    return _current_partition()


def _current_partition() -> int:
    event = faust.current_event()
    return int(event.message.partition) if event is not None else 0


StageRegistrar = Callable[[Pipeline], None]


async def run_bounded(
    semaphore: asyncio.Semaphore, tasks: set[asyncio.Task[None]], work: Callable[[], Any]
) -> None:
    """Start `work` once a slot is free; keep a reference so the task is not collected."""
    await semaphore.acquire()
    task: asyncio.Task[None] = asyncio.ensure_future(work())
    tasks.add(task)

    def _done(finished: asyncio.Task[None]) -> None:
        tasks.discard(finished)
        semaphore.release()
        if not finished.cancelled() and finished.exception() is not None:
            log.error("in-flight task failed", exc_info=finished.exception())

    task.add_done_callback(_done)
