"""The Faust app and the runtime every stage agent shares: typed topics, the idempotence tables,
and one way to publish a stage's outcome (event, forward or final response, dead letters)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from aiokafka.errors import KafkaError
from faust.sensors.monitor import Monitor
from faust.types import TopicT

from schemas import Admission, DeadLetter, Envelope, Event
from sluice.codec import CODEC_NAME, Poison, WireSchema, encode
from sluice.kafka_transport import broker_credentials, broker_url
from sluice.offsets import UnfinishedRecords
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


PUBLISH_BACKOFF_FIRST_S = 0.05
PUBLISH_BACKOFF_MAX_S = 2.0


class PublishFailed(RuntimeError):
    """The broker kept refusing an outcome: its input must not be acked (the worker stops, and
    the input is delivered again after the restart)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record to publish: topic, key, a value for the codec, optional headers."""

    topic: str
    key: bytes
    value: Any
    headers: list[tuple[str, bytes]] | None = None


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


class ReplyLedger(faust.Table):  # type: ignore[misc]
    """The replies table: its changelog is the default reply topic, whose records are Responses
    keyed by correlation_id. Recovery re-keys each one by its request_id, so the ledger answers
    "was this request answered?" whatever correlation_id (or tenant) it had. A record that is
    not a Response is skipped: one bad record must not stop a worker from starting."""

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        now = time.time()
        for event in batch:
            value = event.value
            request_id = value.get("request_id") if isinstance(value, Mapping) else None
            if isinstance(request_id, str):
                self.data[request_id] = {"at": now}
            elif value is not None:
                log.warning(
                    "reply topic record at offset %s is not a response; skipped", event.message.offset
                )


def create_app(settings: Settings) -> faust.App:
    """A Faust app tuned for seconds-long model calls and a fast group join on small clusters."""
    datadir = settings.worker_datadir or settings.home / "worker"
    return faust.App(
        settings.app_id,
        broker=broker_url(settings.bootstrap, settings.consumer_fetch_wait_ms, settings.consumer_in_loop),
        broker_credentials=broker_credentials(settings),
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
        # Records the agents took and have not acked: the consumer commits below them only.
        self.unfinished = UnfinishedRecords()
        app.unfinished_records = self.unfinished
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
        # request_id -> {"at"}: requests answered on the default reply topic. That topic IS this
        # table's changelog, so the response and the record that it was sent are one write: a
        # worker killed at any point can neither lose the answer nor send it twice after recovery.
        # Keyed by request_id, never by the client-chosen correlation_id, so two tenants that pick
        # the same correlation_id cannot shadow each other's answer.
        self.replies = app.tables.add(
            ReplyLedger(
                app,
                name="replies",
                default=None,
                beacon=app.tables.beacon,
                schema=_table_schema(),
                partitions=partitions(RESPONSES),
                changelog_topic=app.topic(
                    self.default_reply_to, schema=_table_schema(), partitions=partitions(RESPONSES)
                ),
            )
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
        self.publish_failures = 0
        self._exit_timer: threading.Timer | None = None

    async def crash(self, reason: PublishFailed) -> None:
        """Stop the worker: `reason` left a record unacked, and only a restart delivers it again."""
        self.exit_if_stop_hangs(reason)
        await self.app.crash(reason)

    def exit_if_stop_hangs(self, reason: BaseException) -> None:
        """After a crash (any: a publish, a timer), bound the clean stop. It talks to the broker
        (commit, flush, leave the group), so a broker that does not answer would hold the process
        - and the supervisor waiting to restart it - for as long as it is gone. After
        `crash_stop_timeout_s` the process exits anyway: nothing is lost, since what was not
        published was not acked, so not committed."""
        if self._exit_timer is None:
            timer = threading.Timer(self.settings.crash_stop_timeout_s, _exit_after_crash, args=(reason,))
            timer.daemon = True  # a clean stop that finishes first ends the process as usual
            timer.start()
            self._exit_timer = timer

    def envelope_topic(self, spec: TopicSpec) -> TopicT:
        return self.envelopes[spec]

    def remember(self, table: Any, key: str, **fields: Any) -> None:
        """Write a table entry, noting its partition so the expiry sweep can tombstone it."""
        table[key] = {"at": time.time(), "p": _current_partition(), **fields}

    async def send(
        self, topic: str, key: bytes, value: Any, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Publish one record and return once the broker has it (see `deliver`)."""
        await self.deliver([Record(topic, key, value, headers)])

    async def deliver(self, records: Sequence[Record]) -> None:
        """Publish records and return only once the broker has acknowledged every one of them.

        Callers ack the input record after this returns, so an input is never committed before
        its outcome is safely on Kafka. Records go straight to the producer, encoded with the
        one codec (Faust's Topic.send wraps each in channel futures and callbacks: twice the
        cost). A record the broker refused is sent again with backoff; after
        `publish_retry_s` this raises `PublishFailed`, and the caller must not ack. A broker
        that does not answer at all (frozen, cut off) is bounded by the same window: the
        producer's own request timeout (Faust: 20 minutes) would hold the record, and the
        worker, silently for that long."""
        pending = list(records)
        delay = PUBLISH_BACKOFF_FIRST_S
        give_up_at = time.monotonic() + self.settings.publish_retry_s
        while True:
            results = await self._attempt(pending, give_up_at)
            failed = [
                (record, result)
                for record, result in zip(pending, results, strict=True)
                if isinstance(result, BaseException)
            ]
            if not failed:
                return
            self.publish_failures += len(failed)
            first_error = failed[0][1]
            if time.monotonic() + delay > give_up_at:
                raise PublishFailed(f"{len(failed)} record(s) not accepted by the broker: {first_error!r}")
            log.warning(
                "%d record(s) not accepted by the broker (%r); sending again", len(failed), first_error
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, PUBLISH_BACKOFF_MAX_S)
            pending = [record for record, _ in failed]

    async def _attempt(self, pending: Sequence[Record], give_up_at: float) -> list[Any]:
        """Send each record once; its result or its error, whichever comes before `give_up_at`.
        An unanswered record fails with `PublishFailed` at once (no time is left to retry it).
        Delivery futures are waited on, never cancelled: they belong to the producer."""
        loop = asyncio.get_running_loop()
        left_at = loop.time() + max(0.0, give_up_at - time.monotonic())
        try:
            async with asyncio.timeout_at(left_at):
                deliveries = [await self._enqueue(record) for record in pending]
        except TimeoutError as exc:
            raise PublishFailed(
                f"the producer did not take {len(pending)} record(s) within the publish window"
            ) from exc
        if not deliveries:
            return []
        _, unanswered = await asyncio.wait(deliveries, timeout=max(0.0, left_at - loop.time()))
        if unanswered:
            self.publish_failures += len(unanswered)
            raise PublishFailed(
                f"{len(unanswered)} record(s) not acknowledged by the broker within the publish window"
            )
        return [_outcome_of(delivery) for delivery in deliveries]

    async def _enqueue(self, record: Record) -> asyncio.Future[Any]:
        """The producer's delivery future for one record; a refusal at enqueue time is a failed
        future too, so `deliver` retries both kinds the same way."""
        try:
            return cast(
                "asyncio.Future[Any]",
                await self.app.producer.send(
                    record.topic, record.key, encode(record.value), None, None, record.headers
                ),
            )
        except (KafkaError, OSError) as exc:  # handed to `deliver`, which logs it and retries or raises
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    def already_answered(self, request_id: str) -> bool:
        """Was this request's final response already sent (on any reply topic)?"""
        replies, answered = self.replies.data, self.answered.data
        return replies.get(request_id) is not None or answered.get(request_id) is not None

    async def publish(
        self, outcome: Outcome, next_topic: TopicSpec | None = None, *, earlier: Sequence[Event] = ()
    ) -> None:
        """Send what a chain decided: the last stage's forward or final response, then the events
        of every stage it ran (`earlier`, then the outcome's own). Returns once all of it is on
        Kafka. A final response is sent at most once per request_id."""
        key = outcome.event.correlation_id.encode()
        records: list[Record] = []
        response = outcome.response
        answered_mark: tuple[str, dict[str, Any]] | None = None
        if response is not None:
            if self.already_answered(response.request_id):
                log.info("request %s was already answered; dropping redelivered outcome", response.request_id)
                return
            reply_to = outcome.reply_to or self.default_reply_to
            # Claimed before the first await, so concurrent copies cannot both send.
            if reply_to == self.default_reply_to:
                self.replies.data[response.request_id] = {"at": time.time()}
            else:
                mark = {"at": time.time(), "p": _current_partition()}
                self.answered.data[response.request_id] = mark
                answered_mark = (response.request_id, mark)
            await self.settle(outcome)
            records.append(Record(reply_to, key, response, [("correlation_id", key)]))
        elif outcome.forward is not None:
            if next_topic is None:
                raise ValueError("a forwarding outcome needs the next stage's topic")
            if next_topic is ADMISSION:  # quotas: re-keyed by tenant, so its decisions are ordered
                admission = Admission(request=outcome.forward)
                records.append(Record(self.admission_name, outcome.forward.tenant.encode(), admission))
            else:
                records.append(Record(self.envelope_names[next_topic], key, outcome.forward))
        events = (*earlier, outcome.event)
        records.extend(Record(self.events_name, key, event) for event in events)
        await self.deliver(records)
        if answered_mark is not None:
            request_id, mark = answered_mark
            self.answered.send_changelog(mark["p"], request_id, mark)
        for event in events:
            for observe in self.event_observers:
                observe(event)

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
        if settlement is not None:  # delivered before the response is even sent
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


CRASH_EXIT_CODE = 1  # what mode's worker exits with after a crash that did stop cleanly


def _exit_after_crash(reason: BaseException) -> None:
    """The clean stop after a crash took too long (the broker does not answer): exit now."""
    log.critical("worker did not stop cleanly after %r; exiting now", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(CRASH_EXIT_CODE)


def _outcome_of(delivery: asyncio.Future[Any]) -> Any:
    """A finished delivery's metadata, or its error (a cancelled one is an error too)."""
    if delivery.cancelled():
        return PublishFailed("the producer cancelled the delivery")
    return delivery.exception() or delivery.result()


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
