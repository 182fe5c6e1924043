"""A cheap open-loop HTTP load generator: raw asyncio protocol, prebuilt request bytes, keep-alive.

Open loop: request i is sent at start + i / rate whether or not earlier ones have answered, and
its latency counts from that *scheduled* time, so a slow server (or a generator that falls
behind) shows up as latency instead of a lower offered rate (no coordinated omission). The
generator parses only the status line and Content-Length, so it costs a few percent of a core at
hundreds of requests per second and leaves the CPU to the systems being measured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

HEADER_END = b"\r\n\r\n"


@dataclass
class Step:
    """One offered rate against one system: what came back, and when."""

    offered_rps: float
    duration_s: float
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # of successful answers only
    elapsed_s: float = 0.0  # first scheduled send to last answer

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, on_lost: Callable[[_Connection], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.on_lost = on_lost
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))
        self.on_lost(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(HEADER_END)
        if end < 0:
            return
        head = bytes(self.buffer[:end]).split(b"\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(int(head[0].split(b" ", 2)[1]))

    async def request(self, payload: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self.waiter


class Pool:
    """Keep-alive connections to one host:port, opened as the load needs them."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[_Connection] = []

    def _forget(self, connection: _Connection) -> None:
        if connection in self.idle:
            self.idle.remove(connection)

    async def send(self, payload: bytes) -> int:
        while self.idle:
            connection = self.idle.pop()
            if connection.open:
                break
        else:
            loop = asyncio.get_running_loop()
            _, connection = await loop.create_connection(
                lambda: _Connection(self._forget), self.host, self.port
            )
        status = await connection.request(payload)
        if connection.open:
            self.idle.append(connection)
        return status

    def close(self) -> None:
        for connection in self.idle:
            if connection.transport is not None:
                connection.transport.close()
        self.idle.clear()


def chat_request(host: str, port: int, body: dict[str, object], api_key: str | None) -> bytes:
    """The bytes of one POST /v1/chat/completions."""
    content = orjson.dumps(body)
    lines = [
        b"POST /v1/chat/completions HTTP/1.1",
        f"Host: {host}:{port}".encode(),
        b"Content-Type: application/json",
        f"Content-Length: {len(content)}".encode(),
    ]
    if api_key:
        lines.append(f"Authorization: Bearer {api_key}".encode())
    return b"\r\n".join(lines) + HEADER_END + content


async def run_step(
    pool: Pool, payloads: list[bytes], rate: float, timeout_s: float, duration_s: float
) -> Step:
    """Send `payloads` at `rate` per second; wait for each at most `timeout_s` past its slot."""
    step = Step(offered_rps=rate, duration_s=duration_s)
    start = time.perf_counter() + 0.05
    last_answer = start

    async def one(index: int, scheduled: float) -> None:
        nonlocal last_answer
        try:
            status = await asyncio.wait_for(pool.send(payloads[index]), timeout_s)
        except TimeoutError:
            step.count_error("timeout")
            return
        except OSError as exc:
            step.count_error(type(exc).__name__)
            return
        now = time.perf_counter()
        last_answer = max(last_answer, now)
        if status == 200:
            step.ok += 1
            step.latencies_ms.append((now - scheduled) * 1000)
        else:
            step.count_error(f"http_{status}")

    tasks = []
    for index in range(len(payloads)):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
        step.sent += 1
    await asyncio.gather(*tasks)
    step.elapsed_s = max(last_answer - start, duration_s)
    return step
