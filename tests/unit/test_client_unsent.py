"""A request Kafka refused fails its caller at once (`SluiceUnsent`), instead of waiting out the
timeout for an answer that cannot come; the gateway turns it into a retryable 503."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from schemas import ErrorCode
from sluice.edge.client import SluiceClient, SluiceUnsent
from sluice.edge.gateway import error_reply, unsent_error
from sluice.settings import Settings


class RefusingProducer:
    """Stands in for the producer's enqueue: the delivery of every record fails."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.sent: list[bytes] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[Any]:
        self.sent.append(value)
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.error is None:
            delivery.set_result(None)
        else:
            delivery.set_exception(self.error)
        return delivery


def client_with(producer: RefusingProducer) -> SluiceClient:
    client = SluiceClient(settings=Settings(), timeout_s=30)
    client._producer = producer  # type: ignore[assignment]
    return client


async def test_a_refused_request_fails_at_once_not_after_the_timeout() -> None:
    producer = RefusingProducer(KafkaTimeoutError())
    client = client_with(producer)
    with pytest.raises(SluiceUnsent) as raised:
        await asyncio.wait_for(client.request("hello", correlation_id="c-1"), timeout=5)
    assert raised.value.correlation_id == "c-1"
    assert isinstance(raised.value.reason, KafkaTimeoutError)
    assert producer.sent, "the request was handed to the producer"
    assert client._pending == {}, "nothing is left waiting"


async def test_a_delivered_request_still_waits_for_its_answer() -> None:
    client = client_with(RefusingProducer(None))
    future = await client._send([{"role": "user", "content": "hi"}], "demo", "c-2", {})
    await asyncio.sleep(0)  # the delivery callback has run
    assert not future.done(), "a delivered request waits for its response"


def test_the_gateway_answers_an_unsent_request_with_a_retryable_503() -> None:
    status, body, _ = error_reply(unsent_error(SluiceUnsent("c-3", KafkaTimeoutError())))
    assert status == 503
    assert body["error"]["code"] == ErrorCode.MODEL_UNAVAILABLE.value
    assert "send it again" in body["error"]["message"]
