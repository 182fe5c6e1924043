"""`SluiceClient`: publish requests to Kafka and await each answer by correlation ID.

One producer and one reply consumer serve any number of requests in flight: responses (and
streamed chunks) are matched to their waiting caller by (tenant, correlation_id) -
correlation_ids are chosen by clients, so two tenants may pick the same one - and thousands of
concurrent calls cost one consumer. The reply reader runs under a supervisor: if it dies,
`readiness()` says so and it is restarted where it stopped reading, so no answer that arrived
meanwhile is skipped."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from schemas import Feedback, Response, StreamChunk
from sluice import kafka_clients
from sluice.codec import encode
from sluice.settings import Settings
from sluice.supervise import Supervisor
from topics import FEEDBACK, REQUESTS, RESPONSES, STREAM

log = logging.getLogger("sluice.client")


class SluiceTimeout(TimeoutError):
    """No response arrived for a request within the client's timeout."""

    def __init__(self, correlation_id: str, timeout_s: float) -> None:
        super().__init__(f"no response for correlation_id {correlation_id!r} within {timeout_s:.1f}s")
        self.correlation_id = correlation_id
        self.timeout_s = timeout_s


class SluiceUnsent(ConnectionError):
    """The broker did not take the request, so Sluice never saw it: safe to send again."""

    def __init__(self, correlation_id: str, reason: BaseException) -> None:
        super().__init__(f"request {correlation_id!r} was not accepted by Kafka: {reason!r}")
        self.correlation_id = correlation_id
        self.reason = reason


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
        self.stream_topic = STREAM.name(prefix)
        self._streams: dict[tuple[str, str], asyncio.Queue[StreamChunk]] = {}
        self.timeout_s = timeout_s or self.settings.client_timeout_s
        self._pending: dict[tuple[str, str], asyncio.Future[Response]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._supervisor: Supervisor | None = None
        self._next_offsets: dict[TopicPartition, int] = {}
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
        self._producer = kafka_clients.producer(
            self.settings, bootstrap=self.bootstrap, acks="all", linger_ms=0
        )
        await self._producer.start()
        self._consumer = kafka_clients.consumer(
            self.settings,
            bootstrap=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=self.settings.client_fetch_wait_ms,  # streamed text waits on it too
        )
        await self._consumer.start()
        partitions = await self._wait_for_partitions(self.reply_to)
        assigned = [TopicPartition(self.reply_to, p) for p in sorted(partitions)]
        streamed = await self._wait_for_partitions(self.stream_topic, attempts=10, required=False)
        assigned += [TopicPartition(self.stream_topic, p) for p in sorted(streamed)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_end(*assigned)
        for tp in assigned:
            self._next_offsets[tp] = await self._consumer.position(tp)
        self._supervisor = Supervisor("client")
        self._supervisor.supervise("replies", self._read_replies)
        await self._supervisor.start()

    def readiness(self) -> dict[str, bool]:
        """{"client.replies": alive}: false from the reader's death until its restart."""
        return self._supervisor.readiness() if self._supervisor is not None else {"client.replies": False}

    async def _wait_for_partitions(self, topic: str, attempts: int = 50, required: bool = True) -> set[int]:
        assert self._consumer is not None
        for _ in range(attempts):
            partitions = self._consumer.partitions_for_topic(topic)
            if partitions:
                return set(partitions)
            await self._consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        if not required:  # an older Sluice without the stream topic: answers come whole
            return set()
        raise RuntimeError(f"reply topic {topic!r} does not exist (is Sluice running?)")

    async def stop(self) -> None:
        if self._supervisor is not None:
            await self._supervisor.stop()
            self._supervisor = None
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _read_replies(self) -> None:
        """Deliver replies and chunks until stopped. Each (re)start resumes at the first record
        not yet delivered, so a reader that died and was restarted skips nothing."""
        consumer = self._consumer
        assert consumer is not None
        for tp, offset in self._next_offsets.items():
            consumer.seek(tp, offset)
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for partition, records in batches.items():
                chunks = partition.topic == self.stream_topic
                for record in records:
                    (self._deliver_chunk if chunks else self._deliver)(record.value)
                    self._next_offsets[partition] = record.offset + 1

    def _deliver_chunk(self, raw: bytes | None) -> None:
        try:
            chunk = StreamChunk.model_validate_json(raw or b"")
        except ValidationError:
            return  # not for a reader of this client's version
        queue = self._streams.get((chunk.tenant, chunk.correlation_id))
        if queue is not None:
            queue.put_nowait(chunk)

    def _deliver(self, raw: bytes | None) -> None:
        try:
            response = Response.model_validate_json(raw or b"")
        except ValidationError as exc:
            log.warning("ignoring an unreadable record on %s: %s", self.reply_to, exc.errors()[0]["msg"])
            return
        future = self._pending.get((response.tenant, response.correlation_id))
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
        messages: list[dict[str, Any]] | str,
        tenant: str = "demo",
        *,
        correlation_id: str | None = None,
        timeout_s: float | None = None,
        **options: Any,
    ) -> Response:
        """Send one request and wait for its response; raises `SluiceTimeout` on timeout and
        `SluiceUnsent` when Kafka refused the request (it was never seen: send it again)."""
        correlation_id = correlation_id or uuid.uuid4().hex
        future: asyncio.Future[Response] | None = None
        try:
            future = await self._send(messages, tenant, correlation_id, options)
            return await self.wait(correlation_id, future, timeout_s)
        finally:
            if future is not None and self._pending.get((tenant, correlation_id)) is future:
                del self._pending[(tenant, correlation_id)]

    async def stream(
        self,
        messages: list[dict[str, Any]] | str,
        tenant: str = "demo",
        *,
        correlation_id: str | None = None,
        timeout_s: float | None = None,
        **options: Any,
    ) -> AsyncIterator[StreamChunk | Response]:
        """Send one request with streaming on: yields the answer's text as StreamChunks while
        it is written and checked, then the Response (status, usage, checks, finish_reason).
        The chunks add up to the Response's content: text the stream did not carry (a buffered
        tenant, a cache hit, a record that came late) arrives as one last chunk before it. A
        stream its checks cut ends with a Response of finish_reason `content_filter` whose
        content is the tenant's safe message. Raises `SluiceTimeout` on timeout."""
        correlation_id = correlation_id or uuid.uuid4().hex
        queue: asyncio.Queue[StreamChunk] = asyncio.Queue()
        self._streams[(tenant, correlation_id)] = queue
        limit = timeout_s or self.timeout_s
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + limit
        sent, streamed = 0, list[str]()
        try:
            future = await self._send(messages, tenant, correlation_id, {**options, "stream": True})
            while True:
                if queue.empty() and not future.done():
                    getter: asyncio.Future[Any] = asyncio.ensure_future(queue.get())
                    waiting: set[asyncio.Future[Any]] = {getter, future}
                    done, _ = await asyncio.wait(
                        waiting,
                        timeout=give_up_at - loop.time(),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if getter not in done:
                        getter.cancel()
                    else:
                        queue.put_nowait(getter.result())
                    if not done:
                        raise SluiceTimeout(correlation_id, limit)
                while not queue.empty():
                    chunk = queue.get_nowait()
                    if chunk.offset == sent:  # in order; repeats and gaps are left to the end
                        sent += len(chunk.delta)
                        streamed.append(chunk.delta)
                        yield chunk
                if future.done():
                    response = future.result()
                    content = response.content or ""
                    whole = response.status.value == "ok" and content.startswith("".join(streamed))
                    if whole and len(content) > sent:
                        yield StreamChunk(
                            correlation_id=correlation_id,
                            request_id=response.request_id,
                            tenant=response.tenant,
                            model=response.model or "",
                            seq=0,
                            offset=sent,
                            delta=content[sent:],
                        )
                    yield response
                    return
        finally:
            self._streams.pop((tenant, correlation_id), None)
            self._pending.pop((tenant, correlation_id), None)

    async def _send(
        self, messages: list[dict[str, Any]] | str, tenant: str, correlation_id: str, options: dict[str, Any]
    ) -> asyncio.Future[Response]:
        """Publish one request, after registering for its answer; the future resolves with it."""
        assert self._producer is not None, "client not started"
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        body: dict[str, Any] = {
            "correlation_id": correlation_id,
            "tenant": tenant,
            "messages": messages,
            **options,
        }
        if self.reply_to != RESPONSES.name(self.settings.topic_prefix):
            body.setdefault("reply_to", self.reply_to)
        future = self.expect(correlation_id, tenant)
        delivery = await self._producer.send(self.requests_topic, encode(body), key=correlation_id.encode())
        # Not awaited (the answer is what the caller waits for), but never ignored: a request
        # the broker refused fails its caller at once instead of waiting out the timeout.
        delivery.add_done_callback(lambda sent: _fail_if_unsent(future, correlation_id, sent))
        return future

    def expect(self, correlation_id: str, tenant: str = "demo") -> asyncio.Future[Response]:
        """Register interest in the answer to (tenant, correlation_id) before its request is
        published. A request whose tenant could not be read is answered with tenant ""."""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[(tenant, correlation_id)] = future
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


def _fail_if_unsent(
    future: asyncio.Future[Response], correlation_id: str, delivery: asyncio.Future[Any]
) -> None:
    """The request's delivery ended: if the broker refused it, nobody will answer it."""
    if future.done():
        return
    if delivery.cancelled():
        future.set_exception(SluiceUnsent(correlation_id, asyncio.CancelledError()))
    elif (error := delivery.exception()) is not None:
        future.set_exception(SluiceUnsent(correlation_id, error))
