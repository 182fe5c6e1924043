"""Start real Sluice processes for end-to-end tests: simulator, sink and worker(s) as child
processes on the session's real broker, each with its own settings passed by environment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sluice.local.broker import free_port
from sluice.settings import Settings
from sluice.warehouse.queries import running_sink_url
from sluice.warehouse.sink import SinkStats, run_sink


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a child process load exactly these settings."""
    return settings.child_env(os.environ, **extra)


@dataclass
class Stack:
    settings: Settings
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{name}.log").open("ab")
        command = name.split("-")[0]
        process = subprocess.Popen(
            [sys.executable, "-m", "sluice", command, *args],
            env=settings_env(self.settings, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = process
        return process

    def fault(self, model: str, mode: str, **params: object) -> None:
        """Switch a simulator fault mode at run time (POST /admin/faults)."""
        reply = httpx.post(
            f"{self.simulator_root}/admin/faults", json={"model": model, "mode": mode, **params}
        )
        reply.raise_for_status()

    def simulator_calls(self, model: str) -> int:
        stats = httpx.get(f"{self.simulator_root}/admin/stats").json()
        return int(stats["models"][model]["calls"])

    def wait_worker_ready(self, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
        ready = self.settings.run_dir / f"worker-{process.pid}.ready"
        self._wait(lambda: ready.exists(), f"worker {process.pid} ready", timeout, process)

    def wait_sink_ready(self, timeout: float = 60.0) -> str:
        self._wait(
            lambda: running_sink_url(self.settings) is not None,
            "sink ready",
            timeout,
            self.processes.get("sink"),
        )
        url = running_sink_url(self.settings)
        assert url is not None
        return url

    def wait_simulator_ready(self, timeout: float = 30.0) -> None:
        def answers() -> bool:
            try:
                return httpx.get(self.simulator_root + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        self._wait(answers, "simulator ready", timeout, self.processes.get("simulator"))

    @property
    def simulator_root(self) -> str:
        return self.settings.simulator_url.removesuffix("/v1")

    def _wait(
        self, check: object, what: str, timeout: float, process: subprocess.Popen[bytes] | None
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(check) and check():
                return
            if process is not None and process.poll() is not None:
                raise AssertionError(f"{what}: process exited with {process.returncode}; logs in {self.logs}")
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {timeout}s; logs in {self.logs}")

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def query(self, name: str, minutes: int = 600) -> list[dict[str, object]]:
        url = running_sink_url(self.settings)
        assert url is not None, "sink is not running"
        reply = httpx.get(f"{url}/query/{name}", params={"minutes": minutes}, timeout=30)
        reply.raise_for_status()
        rows = reply.json()["rows"]
        assert isinstance(rows, list)
        return rows


def stack_settings(bootstrap: str, root: Path, tag: str, **overrides: Any) -> Settings:
    """Settings for one e2e module: its own topic prefix, app id, sink group, chdb path and
    simulator port on the shared broker, with short group timeouts so workers join fast."""
    unique = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "home": root / "home",
        "kafka_bootstrap": bootstrap,
        "topic_prefix": f"{tag}{unique}.",
        "app_id": f"sluice-{tag}-{unique}",
        "sink_group": f"sink-{unique}",
        "clickhouse_dsn": f"chdb://{root / 'clickhouse'}",
        "simulator_port": free_port(),
        "simulator_seed": 7,
        "broker_session_timeout_s": 3.0,
        "broker_rebalance_timeout_s": 3.0,
        "broker_heartbeat_interval_s": 0.5,
        "sink_batch_seconds": 0.2,
        "sink_fetch_wait_ms": 200,  # within the short batches above
    }
    return Settings(**{**values, **overrides})


@contextmanager
def running_stack(settings: Settings, logs: Path, simulator_latency_ms: float = 20.0) -> Iterator[Stack]:
    stack = Stack(settings, logs)
    try:
        stack.start("simulator", SLUICE_SIMULATOR_LATENCY_MS=str(simulator_latency_ms))
        stack.start("sink")
        stack.wait_simulator_ready()
        stack.wait_sink_ready()
        worker = stack.start("worker")
        stack.wait_worker_ready(worker)
        yield stack
    finally:
        stack.stop_all()


async def read_topic(
    bootstrap: str, topic: str, idle_s: float = 1.5
) -> list[tuple[bytes | None, bytes | None, int, int]]:
    """Everything currently on a topic: (key, value, partition, offset), read until idle."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        records: list[tuple[bytes | None, bytes | None, int, int]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=10000)
            for tp, batch in batches.items():
                records.extend((r.key, r.value, tp.partition, r.offset) for r in batch)
            positions = {tp: await consumer.position(tp) for tp in assigned}
            if all(positions[tp] >= ends[tp] for tp in assigned) and not batches:
                break
        return records
    finally:
        await consumer.stop()


async def responses_of(settings: Settings, correlation_id: str) -> list[dict[str, object]]:
    """Every response on the default reply topic for one correlation_id (for failure messages)."""
    found = []
    for _, value, partition, offset in await read_topic(
        settings.bootstrap, f"{settings.topic_prefix}responses"
    ):
        body = orjson.loads(value or b"{}")
        if body.get("correlation_id") == correlation_id:
            found.append({"partition": partition, "offset": offset, "request_id": body.get("request_id")})
    return found


async def responses_by_correlation(settings: Settings) -> Counter[str]:
    """How many responses each correlation_id got on the default reply topic."""
    counts: Counter[str] = Counter()
    for _, value, _, _ in await read_topic(settings.bootstrap, f"{settings.topic_prefix}responses"):
        counts[orjson.loads(value or b"{}")["correlation_id"]] += 1
    return counts


async def publish_raw(bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def eventually(check: object, timeout: float = 60.0, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check() if callable(check) else check
        if last is True:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


SINK_TIMEOUT_S = 30.0  # start-up and final flush of an in-process sink; an upper bound only


@asynccontextmanager
async def running_sink(settings: Settings) -> AsyncIterator[SinkStats]:
    """The sink as a task of the test's loop; stopped cleanly (final flush) on exit."""
    ready, stop, stats = asyncio.Event(), asyncio.Event(), SinkStats()
    task = asyncio.create_task(run_sink(settings, ready=ready, stop=stop, stats=stats))
    try:
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, timeout=SINK_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # re-raise the sink's start-up error
        assert ready.is_set(), "sink not ready in time"
        yield stats
    finally:
        stop.set()
        await asyncio.wait_for(task, SINK_TIMEOUT_S)
