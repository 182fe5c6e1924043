"""The worker's side of streaming: released text becomes StreamChunk records on the stream
topic, in order, keyed by correlation_id; a buffered tenant's request gets no stream hooks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agents.faust_wiring import ChunkPublisher
from schemas import Envelope, Request, StreamChunk
from sluice.outcome import utcnow
from sluice.settings import Settings
from sluice.tenants import TenantConfig


class FakePipeline:
    def __init__(self) -> None:
        self.settings = Settings(topic_prefix="t.")
        self.sent: list[tuple[str, bytes, Any]] = []

    async def send(self, topic: str, key: bytes, value: Any) -> None:
        self.sent.append((topic, key, value))


def envelope() -> Envelope:
    now = utcnow()
    request = Request.model_validate(
        {
            "correlation_id": "c9",
            "tenant": "acme",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        }
    )
    return Envelope(
        request_id="r9",
        correlation_id="c9",
        tenant="acme",
        reply_to="t.responses",
        received_at=now,
        deadline_at=now + timedelta(seconds=5),
        request=request,
    )


async def test_released_text_is_published_in_order_on_the_stream_topic() -> None:
    pipeline = FakePipeline()
    publisher = ChunkPublisher(pipeline, envelope())  # type: ignore[arg-type]
    hooks = publisher.hooks(TenantConfig())
    assert hooks is not None
    hooks.model = "sim-small"
    await hooks.on_chunk("Hello ")
    await hooks.on_chunk("world.")
    await publisher.flush()
    assert [(topic, key) for topic, key, _ in pipeline.sent] == [("t.stream", b"c9")] * 2
    chunks = [value for _, _, value in pipeline.sent]
    assert all(isinstance(c, StreamChunk) for c in chunks)
    assert [(c.seq, c.offset, c.delta, c.model) for c in chunks] == [
        (0, 0, "Hello ", "sim-small"),
        (1, 6, "world.", "sim-small"),
    ]
    assert hooks.guard().window == 1  # the tenant's window


async def test_an_asynchronous_tenant_streams_without_hold_back() -> None:
    publisher = ChunkPublisher(FakePipeline(), envelope())  # type: ignore[arg-type]
    hooks = publisher.hooks(TenantConfig(output={"stream_checks": "asynchronous"}))  # type: ignore[arg-type]
    assert hooks is not None and hooks.guard().hold_back is False
    assert hooks.attributes()["stream"] == "asynchronous"


async def test_a_buffered_tenant_gets_the_answer_whole() -> None:
    publisher = ChunkPublisher(FakePipeline(), envelope())  # type: ignore[arg-type]
    assert publisher.hooks(TenantConfig(output={"stream_checks": "buffered"})) is None  # type: ignore[arg-type]
    await publisher.flush()  # nothing to wait for
