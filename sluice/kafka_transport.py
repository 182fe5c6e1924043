"""Faust's aiokafka transport with a configurable fetch long-poll.

Faust hard-codes `fetch_max_wait_ms=1500`. Apache Kafka answers a waiting fetch as soon as data
arrives, but Tansu (the embedded broker) holds it for the whole wait whenever Faust's fetch
spans many partitions: measured here, every hop then costs 0.1-0.8 s. A short wait keeps each
hop at a few ms on Tansu; on real Kafka raise it (SLUICE_CONSUMER_FETCH_WAIT_MS) to save polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import faust.auth
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.tuples import ack_lock
from mode import Service
from mode.utils.futures import maybe_async

from sluice.kafka_clients import security_options
from sluice.offsets import UnfinishedRecords, split_at_floor
from sluice.settings import Settings

SCHEME = "sluice-kafka"
HOLE_READ_AGAIN_AFTER_S = 2.0  # a missing record at the head for this long is read again
log = logging.getLogger("sluice.kafka")


class ShortPollConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    fetch_max_wait_ms: ClassVar[int] = 10

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


class InLoopConsumerThread(ShortPollConsumerThread):
    """Faust's consumer "thread" run on the worker's own event loop instead of a thread.

    Faust hands every fetch, commit and seek to a thread with its own event loop and waits for
    the answer through a queue of futures, the two threads sharing one interpreter lock. Here
    each call is awaited directly, and aiokafka's fetch and heartbeat tasks share the agents'
    loop: answers came back sooner for the same CPU (bench/consumer_loop.py). The price: a
    stage that blocks the loop for seconds also delays the consumer's heartbeats.
    """

    def __init__(self, consumer: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)

    async def maybe_start(self) -> bool:
        if self._started.is_set():
            return False
        await self.start()
        return True

    async def start(self) -> None:
        await Service._default_start(self)

    async def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        try:
            await self.on_stop()
            await self.on_thread_stop()  # stops the aiokafka consumer
            await self._default_stop_children()
            await self._default_stop_futures()
            await self._default_stop_exit_stacks()
            await self.on_shutdown()
        finally:
            self._shutdown.set()  # a failed stop must not leave the worker waiting out its timeout

    def _stopped_set(self) -> None:
        self._stopped.set()

    def set_shutdown(self) -> None:
        self._shutdown.set()

    async def call_thread(self, fun: Any, *args: Any, **kwargs: Any) -> Any:
        return await maybe_async(fun(*args, **kwargs))  # as the thread's method queue runs it

    async def cast_thread(self, fun: Any, *args: Any, **kwargs: Any) -> None:
        await maybe_async(fun(*args, **kwargs))

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.consumer.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        await self.consumer.on_partitions_assigned(assigned, generation_id)


class ShortPollConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's consumer with a short fetch wait, and commits that never pass an unfinished or
    skipped record (sluice/offsets.py): the app's `unfinished_records`, kept by the agents."""

    skipped_acks_refused = 0
    in_loop: ClassVar[bool] = True  # SLUICE_CONSUMER_IN_LOOP, set by broker_url

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holes: dict[Any, tuple[int, float]] = {}  # partition -> (missing offset, first seen)
        self._seeks: set[asyncio.Future[None]] = set()

    def _new_consumer_thread(self) -> ShortPollConsumerThread:
        kind = InLoopConsumerThread if self.in_loop else ShortPollConsumerThread
        return kind(self, loop=self.loop, beacon=self.beacon)

    @property
    def _unfinished(self) -> UnfinishedRecords | None:
        """The records the app's agents took and have not finished (None: no Sluice agents)."""
        return getattr(self.app, "unfinished_records", None)

    def ack(self, message: Any) -> bool:
        """Count an ack only if an agent finished the record; Faust's ack of a record its stream
        skipped (rebalance, shutdown) would commit past a record nobody handled."""
        unfinished = self._unfinished
        if unfinished is None or unfinished.ack_is_an_agents(message):
            return super().ack(message)  # type: ignore[no-any-return]
        with ack_lock:
            self._unacked_messages.discard(message)  # nothing to wait for at the rebalance
        ShortPollConsumer.skipped_acks_refused += 1
        log.warning(
            "record %s[%d]@%d was skipped by its stream, not handled: left uncommitted, read again",
            message.topic,
            message.partition,
            message.offset,
        )
        return False

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        """Faust's fetched records, where one read again after a seek is delivered again.

        Faust drops a fetched record whose offset is below the last one it read. After a
        rebalance's seek to the committed offset, records fetched before the seek can still
        arrive and move that mark ahead, so the records read again from the committed offset
        were dropped; one that an agent had never taken (its queue was cleared in the
        rebalance) was then never handled. A record read again is handled again instead: the
        replies ledger answers each request once."""
        read_offsets = self._read_offset
        async for tp, message in super().getmany(timeout):
            last = read_offsets.get(tp)
            if last is not None and message.offset < last:
                read_offsets[tp] = None  # neither a drop nor a gap: delivered, read mark reset
            yield tp, message

    def _hole_at_head(self, tp: Any) -> bool:
        """Is the committed offset (the next record to read) neither acked, nor a gap, nor with
        an agent, while later records are acked? Faust's own check lets one such record through."""
        committed = self._committed_offset.get(tp)
        acked = self._acked.get(tp)
        if committed is None or not acked or min(acked) <= committed:
            return False
        gaps = self._gap.get(tp)
        if gaps and gaps.overlaps(committed):
            return False
        unfinished = self._unfinished
        return not (unfinished is not None and unfinished.holds(tp, committed))

    def _new_offset(self, tp: Any) -> int | None:
        if self._hole_at_head(tp):
            self._read_hole_again(tp)
            return None  # the record at the committed offset is not done: commit nothing past it
        self._holes.pop(tp, None)
        unfinished = self._unfinished
        floor = unfinished.lowest(tp) if unfinished is not None else None
        if floor is None:
            return super()._new_offset(tp)  # type: ignore[no-any-return]
        with ack_lock:  # acks add to the same list from other tasks and threads
            acked: list[int] = self._acked[tp]
            below, held = split_at_floor(acked, floor)
            if not below:
                return None
            acked[:] = below  # Faust commits the first consecutive run of what it sees
            try:
                return super()._new_offset(tp)  # type: ignore[no-any-return]
            finally:
                acked.extend(held)

    def _read_hole_again(self, tp: Any) -> None:
        """A record at the head that stays missing (it left the fetch but never reached an
        agent) is read again: after `HOLE_READ_AGAIN_AFTER_S` the partition is sought back to
        the committed offset, and what follows it is delivered again (answered once)."""
        committed = self._committed_offset[tp]
        now = time.monotonic()
        seen_at, since = self._holes.get(tp, (None, now))
        if seen_at != committed:
            self._holes[tp] = (committed, now)
            return
        if now - since < HOLE_READ_AGAIN_AFTER_S or tp not in self.assignment():
            return
        del self._holes[tp]
        log.warning(
            "record %s[%d]@%d never reached an agent: reading the partition again from it",
            tp.topic,
            tp.partition,
            committed,
        )
        seeking = asyncio.ensure_future(self._seek_back(tp, committed))
        self._seeks.add(seeking)
        seeking.add_done_callback(self._seek_done)

    async def _seek_back(self, tp: Any, offset: int) -> None:
        await self._seek(tp, offset)
        self._read_offset[tp] = None  # what arrives next is delivered, neither dropped nor a gap

    def _seek_done(self, seeking: asyncio.Future[None]) -> None:
        self._seeks.discard(seeking)
        if not seeking.cancelled() and seeking.exception() is not None:
            # the hole stays uncommitted: the next rebalance or restart reads it again
            log.error("seeking back to a missing record failed", exc_info=seeking.exception())


class Transport(faust_aiokafka.Transport):  # type: ignore[misc]
    Consumer = ShortPollConsumer


def broker_url(bootstrap: str, fetch_max_wait_ms: int, consumer_in_loop: bool = True) -> str:
    """The Faust broker URL that selects this transport (one app per process)."""
    ShortPollConsumerThread.fetch_max_wait_ms = fetch_max_wait_ms
    ShortPollConsumer.in_loop = consumer_in_loop
    drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
    first, *rest = bootstrap.split(",")
    return ";".join([f"{SCHEME}://{first}", *rest])


def broker_credentials(settings: Settings) -> faust.auth.Credentials | None:
    """The Faust app's `broker_credentials` for the Kafka security settings (None: plaintext),
    built from the same options as every other client (sluice.kafka_clients)."""
    options = security_options(settings)
    protocol, context = options["security_protocol"], options.get("ssl_context")
    if protocol.startswith("SASL_"):
        return faust.auth.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            ssl_context=context,
            mechanism=options["sasl_mechanism"],
        )
    if context is not None:
        return faust.auth.SSLCredentials(context)
    return None
