"""`SluiceClient`: publish requests to Kafka and await each answer by correlation ID.

One producer and one reply consumer serve any number of requests in flight: responses are
matched to waiting futures by correlation_id, so thousands of concurrent calls cost one
consumer, not one each."""

from __future__ import annotations

import asyncio
import logging
import uuid
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from schemas import Feedback, Response
from sluice.codec import encode
from sluice.settings import Settings
from topics import FEEDBACK, REQUESTS, RESPONSES

log = logging.getLogger("sluice.client")


class SluiceTimeout(TimeoutError):
    """No response arrived for a request within the client's timeout."""

    def __init__(self, correlation_id: str, timeout_s: float) -> None:
        super().__init__(f"no response for correlation_id {correlation_id!r} within {timeout_s:.1f}s")
        self.correlation_id = correlation_id
        self.timeout_s = timeout_s


class SluiceClient:
    """Async client. Use as `async with SluiceClient(bootstrap=...) as client:`."""

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        settings: Settings | None = None,
        reply_to: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.bootstrap = bootstrap or self.settings.bootstrap
        prefix = self.settings.topic_prefix
        self.requests_topic = REQUESTS.name(prefix)
        self.feedback_topic = FEEDBACK.name(prefix)
        self.reply_to = reply_to or RESPONSES.name(prefix)
        self.timeout_s = timeout_s or self.settings.client_timeout_s
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self.unmatched_responses = 0

    async def __aenter__(self) -> SluiceClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, and position the reply consumer at the end before any request is sent,
        so no response can slip past between sending and listening."""
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=self.settings.client_fetch_wait_ms,
        )
        await self._consumer.start()
        partitions = await self._wait_for_partitions(self.reply_to)
        assigned = [TopicPartition(self.reply_to, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_end(*assigned)
        for tp in assigned:
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read_replies(), name="sluice-client-replies")

    async def _wait_for_partitions(self, topic: str, attempts: int = 50) -> set[int]:
        assert self._consumer is not None
        for _ in range(attempts):
            partitions = self._consumer.partitions_for_topic(topic)
            if partitions:
                return set(partitions)
            await self._consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"reply topic {topic!r} does not exist (is Sluice running?)")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _read_replies(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    self._deliver(record.value)

    def _deliver(self, raw: bytes | None) -> None:
        try:
            response = Response.model_validate_json(raw or b"")
        except ValidationError as exc:
            log.warning("ignoring an unreadable record on %s: %s", self.reply_to, exc.errors()[0]["msg"])
            return
        future = self._pending.get(response.correlation_id)
        if future is None or future.done():
            self.unmatched_responses += 1
            return
        future.set_result(response)

    async def publish_raw(self, value: bytes, key: str | None = None) -> None:
        """Send bytes as they are to the requests topic (tests and tools use it for bad input)."""
        assert self._producer is not None, "client not started"
        await self._producer.send_and_wait(self.requests_topic, value, key=key.encode() if key else None)

    async def request(
        self,
        messages: list[dict[str, str]] | str,
        tenant: str = "demo",
        *,
        correlation_id: str | None = None,
        timeout_s: float | None = None,
        **options: Any,
    ) -> Response:
        """Send one request and wait for its response; raises `SluiceTimeout` on timeout."""
        assert self._producer is not None, "client not started"
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        correlation_id = correlation_id or uuid.uuid4().hex
        body: dict[str, Any] = {
            "correlation_id": correlation_id,
            "tenant": tenant,
            "messages": messages,
            **options,
        }
        if self.reply_to != RESPONSES.name(self.settings.topic_prefix):
            body.setdefault("reply_to", self.reply_to)
        future = self.expect(correlation_id)
        try:
            await self._producer.send(self.requests_topic, encode(body), key=correlation_id.encode())
            return await self.wait(correlation_id, future, timeout_s)
        finally:
            self._pending.pop(correlation_id, None)

    def expect(self, correlation_id: str) -> asyncio.Future[Response]:
        """Register interest in a correlation_id before its request is published."""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        return future

    async def wait(
        self, correlation_id: str, future: asyncio.Future[Response], timeout_s: float | None = None
    ) -> Response:
        limit = timeout_s or self.timeout_s
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError as exc:
            raise SluiceTimeout(correlation_id, limit) from exc

    async def feedback(self, feedback: Feedback) -> None:
        assert self._producer is not None, "client not started"
        await self._producer.send_and_wait(
            self.feedback_topic, encode(feedback), key=feedback.request_id.encode()
        )
