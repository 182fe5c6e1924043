"""Faust's aiokafka transport with a configurable fetch long-poll.

Faust hard-codes `fetch_max_wait_ms=1500`. Apache Kafka answers a waiting fetch as soon as data
arrives, but Tansu (the embedded broker) holds it for the whole wait whenever Faust's fetch
spans many partitions: measured here, every hop then costs 0.1-0.8 s. A short wait keeps each
hop at a few ms on Tansu; on real Kafka raise it (SLUICE_CONSUMER_FETCH_WAIT_MS) to save polls.
"""

from __future__ import annotations

from typing import Any, ClassVar

import faust.auth
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.tuples import ack_lock

from sluice.kafka_clients import security_options
from sluice.offsets import UnfinishedRecords, split_at_floor
from sluice.settings import Settings

SCHEME = "sluice-kafka"


class ShortPollConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    fetch_max_wait_ms: ClassVar[int] = 10

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


class ShortPollConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's consumer with a short fetch wait, and commits that never pass an unfinished
    record (sluice/offsets.py): the app's `unfinished_records`, kept by the agents."""

    def _new_consumer_thread(self) -> ShortPollConsumerThread:
        return ShortPollConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: Any) -> int | None:
        unfinished: UnfinishedRecords | None = getattr(self.app, "unfinished_records", None)
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


class Transport(faust_aiokafka.Transport):  # type: ignore[misc]
    Consumer = ShortPollConsumer


def broker_url(bootstrap: str, fetch_max_wait_ms: int) -> str:
    """The Faust broker URL that selects this transport (one app per process)."""
    ShortPollConsumerThread.fetch_max_wait_ms = fetch_max_wait_ms
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
