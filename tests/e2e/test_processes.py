"""Every process the way a deployment runs it: its own command (`sluice gateway|worker|sink|
simulator`) on the real broker and ClickHouse engine, /healthz, /readyz and /metrics on the
configured ports, and SIGTERM under load draining with 0 lost and 0 duplicated answers.

The tests run in file order on one stack (starting it costs most of the time)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from sluice.edge.client import SluiceClient
from sluice.local.broker import EmbeddedBroker, free_port
from sluice.settings import Settings
from tests.e2e.stack import Stack, read_topic, responses_by_correlation, settings_env, stack_settings

pytestmark = pytest.mark.e2e

MODEL_LATENCY_MS = 300  # long enough that SIGTERM always finds model calls in flight


@pytest.fixture(scope="module")
def settings(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("processes")
    return stack_settings(
        broker.bootstrap,
        root,
        "proc",
        http_port=free_port(),
        worker_port=free_port(),
        sink_port=free_port(),
        drain_timeout_s=20.0,
        gateway_drain_delay_s=1.0,
    )


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(settings, tmp_path_factory.mktemp("process-logs"))
    try:
        running.start("simulator", SLUICE_SIMULATOR_LATENCY_MS=str(MODEL_LATENCY_MS))
        running.start("sink")
        running.start("worker")
        running.start("gateway")
        for name in ("simulator", "sink", "worker", "gateway"):
            wait_ready(running, name, health_url(settings, name))
        yield running
    finally:
        running.stop_all()


def health_url(settings: Settings, name: str) -> str:
    port = {
        "gateway": settings.http_port,
        "worker": settings.worker_port,
        "sink": settings.sink_port,
        "simulator": settings.simulator_port,
    }[name]
    return f"http://127.0.0.1:{port}"


def wait_ready(stack: Stack, name: str, base: str, timeout: float = 90.0) -> None:
    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    stack._wait(ready, f"{name} /readyz", timeout, stack.processes.get(name))


def stop_and_wait(stack: Stack, name: str, timeout: float = 60.0) -> int:
    """SIGTERM one process (a drain) and return its exit code."""
    process = stack.processes.pop(name)
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout)


@pytest.mark.parametrize("name", ["gateway", "worker", "sink", "simulator"])
def test_health_readiness_and_metrics_on_the_configured_port(stack: Stack, name: str) -> None:
    base = health_url(stack.settings, name)
    alive = httpx.get(f"{base}/healthz", timeout=5)
    assert alive.status_code == 200
    ready = httpx.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    families = {f.name for f in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=5).text)}
    assert "process_cpu_seconds" in families, f"{name} exports process metrics"
    if name in ("gateway", "worker", "sink"):
        parts = ready.json()["parts"]
        assert parts["accepting"] is True and all(parts.values())


def test_the_sink_gives_way_to_the_request_path(stack: Stack) -> None:
    """Analytics is background work: on a shared machine the sink runs at a lower CPU priority
    (SLUICE_SINK_NICENESS) than the processes that answer requests."""
    sink, worker = stack.processes["sink"], stack.processes["worker"]
    sink_niceness = os.getpriority(os.PRIO_PROCESS, sink.pid)
    assert sink_niceness == os.getpriority(os.PRIO_PROCESS, worker.pid) + stack.settings.sink_niceness
    assert stack.settings.sink_niceness > 0


async def test_gateway_drains_on_sigterm(stack: Stack) -> None:
    """SIGTERM while requests are in flight: /readyz turns 503 while the gateway still serves
    (SLUICE_GATEWAY_DRAIN_DELAY_S), every request it accepted (published to Kafka) gets its
    answer exactly once, a request it did not accept fails at the connection (safe to retry,
    never a 5xx), then the port closes and the gateway exits 0."""
    settings = stack.settings
    base = health_url(settings, "gateway")
    ids = [f"gw-drain-{uuid.uuid4().hex}" for _ in range(30)]

    async def call(http: httpx.AsyncClient, correlation_id: str) -> int | str:
        body = {"model": "auto", "messages": [{"role": "user", "content": f"drain {correlation_id}"}]}
        try:
            reply = await http.post(
                f"{base}/v1/chat/completions", json=body, headers={"X-Request-Id": correlation_id}
            )
        except httpx.TransportError as exc:  # refused or closed before the request was read
            return type(exc).__name__
        return reply.status_code

    async with httpx.AsyncClient(timeout=60) as http:
        calls = [asyncio.create_task(call(http, cid)) for cid in ids]
        await asyncio.sleep(0.15)  # the requests are in flight: the model takes 300 ms
        process = stack.processes["gateway"]
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        unready = (await http.get(f"{base}/readyz")).status_code
        outcomes = dict(zip(ids, await asyncio.gather(*calls), strict=True))
        code = await asyncio.to_thread(process.wait, 60)
        late = await call(http, f"gw-late-{uuid.uuid4().hex}")
    stack.processes.pop("gateway")
    assert code == 0
    assert unready == 503, "a draining gateway says it is not ready while it still serves"
    published = {
        json.loads(value or b"{}").get("correlation_id")
        for _, value, _, _ in await read_topic(settings.bootstrap, f"{settings.topic_prefix}requests")
    }
    accepted = [cid for cid in ids if cid in published]
    assert accepted, "SIGTERM came after the requests were sent"
    assert {cid: outcomes[cid] for cid in accepted} == dict.fromkeys(accepted, 200), "0 lost"
    assert all(isinstance(outcomes[cid], str) for cid in ids if cid not in published), outcomes
    counts = await responses_by_correlation(settings)
    assert {cid: counts[cid] for cid in accepted} == dict.fromkeys(accepted, 1), "0 duplicated"
    assert late == "ConnectError", "a stopped gateway takes no new connections"


async def test_worker_drains_on_sigterm_under_load(stack: Stack) -> None:
    """SIGTERM mid-load: the worker stops taking records, finishes the model calls it started
    and publishes their results (every call it made has its infer event when it exits), commits
    and exits 0; the next worker takes the rest. Every request is answered exactly once."""
    settings = stack.settings
    calls_before = total_calls(stack)
    async with SluiceClient(settings=settings, timeout_s=120) as client:
        sent: list[asyncio.Task[object]] = []
        ids = [f"wk-drain-{uuid.uuid4().hex}" for _ in range(80)]
        for index, correlation_id in enumerate(ids):  # 40 req/s for 2 s, open loop
            prompt = f"worker drain #{index}"
            sent.append(
                asyncio.create_task(client.request(prompt, correlation_id=correlation_id, model="sim-small"))
            )
            if index == 40:
                old = stack.processes.pop("worker")
                old.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.025)
        code = await asyncio.to_thread(old.wait, 60)
        assert code == 0, f"the drained worker exits 0; logs in {stack.logs}"
        calls_by_old_worker = total_calls(stack) - calls_before
        finished = await infer_events(settings, set(ids))
        assert calls_by_old_worker > 0, "SIGTERM came while the worker was calling models"
        assert sum(finished.values()) == calls_by_old_worker, "no model call was abandoned mid-way"
        replacement = stack.start("worker")
        stack.wait_worker_ready(replacement, timeout=90)
        responses = await asyncio.gather(*sent)
    assert all(getattr(r, "status", None) is not None for r in responses)
    counts = await responses_by_correlation(settings)
    assert [cid for cid in ids if counts[cid] != 1] == [], "0 lost, 0 duplicated"


async def infer_events(settings: Settings, ids: set[str]) -> dict[str, int]:
    """How many infer events (one per finished model call) each of these requests has."""
    found: dict[str, int] = {}
    for _, value, _, _ in await read_topic(settings.bootstrap, f"{settings.topic_prefix}events"):
        event = json.loads(value or b"{}")
        if event.get("correlation_id") in ids and event.get("stage") == "infer":
            found[event["correlation_id"]] = found.get(event["correlation_id"], 0) + 1
    return found


def total_calls(stack: Stack) -> int:
    models = httpx.get(f"{stack.simulator_root}/admin/stats", timeout=5).json()["models"]
    return sum(int(stats["calls"]) for stats in models.values())


async def test_sink_drains_on_sigterm_under_load(stack: Stack) -> None:
    """SIGTERM while events flow: the sink inserts its last batch and commits, exits 0; the next
    sink starts after it. Every event on the topic is in ClickHouse exactly once."""
    settings = stack.settings
    async with SluiceClient(settings=settings, timeout_s=120) as client:
        load = [asyncio.create_task(client.request(f"sink drain #{i}", model="sim-small")) for i in range(40)]
        await asyncio.sleep(0.5)
        code = await asyncio.to_thread(stop_and_wait, stack, "sink")
        assert code == 0, f"the drained sink exits 0; logs in {stack.logs}"
        await asyncio.gather(*load)
    stack.start("sink")
    wait_ready(stack, "sink", health_url(settings, "sink"))
    events = await read_topic(settings.bootstrap, f"{settings.topic_prefix}events")
    expected = len({json.loads(value or b"{}")["event_id"] for _, value, _, _ in events})
    assert expected >= 40 * 5, "every request's stage events are on the topic"
    for _ in range(120):  # the new sink catches up with what the drained one left
        if await sink_lag(settings) == 0:
            break
        await asyncio.sleep(0.5)
    assert await sink_lag(settings) == 0, f"the sink caught up; logs in {stack.logs}"
    assert await asyncio.to_thread(stop_and_wait, stack, "sink") == 0
    rows, distinct = await asyncio.to_thread(count_events, settings)
    stack.start("sink")  # for the tests after this one
    assert distinct == expected, "0 lost"
    assert rows == distinct, "0 duplicated rows"


async def sink_lag(settings: Settings) -> int:
    """Events not yet committed by the sink's consumer group (end offset - committed)."""
    reader = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=settings.sink_group)
    await reader.start()
    try:
        topic = f"{settings.topic_prefix}events"
        tps = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        ends = await reader.end_offsets(tps)
        lag = 0
        for tp in tps:
            lag += max(0, ends[tp] - ((await reader.committed(tp)) or 0))
        return lag
    finally:
        await reader.stop()


def count_events(settings: Settings) -> tuple[int, int]:
    """Rows and distinct event ids in ClickHouse, read by a separate process (chdb allows one
    process per data path, and this test process may hold another)."""
    script = (
        "import json, sys\n"
        "from sluice.settings import Settings\n"
        "from sluice.warehouse.connection import connect\n"
        "w = connect(Settings())\n"
        "row = w.query('SELECT count() AS rows, uniqExact(event_id) AS ids FROM {db}.events')[0]\n"
        "print(json.dumps([int(row['rows']), int(row['ids'])]))\n"
    )
    env = settings_env(settings)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, check=True, timeout=120
    )
    rows, ids = json.loads(out.stdout)
    return int(rows), int(ids)


async def test_simulator_drains_on_sigterm(stack: Stack) -> None:
    """Model calls in flight at SIGTERM are answered; then the simulator exits 0."""
    url = f"{stack.simulator_root}/v1/chat/completions"
    body = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}
    # Each call takes about 1.2 s, so all 20 are surely in flight (sent, not yet answered) when the
    # signal comes, however slowly a busy machine starts them.
    stack.fault("sim-small", "slow", factor=4)
    async with httpx.AsyncClient(timeout=30) as http:
        calls = [asyncio.create_task(http.post(url, json=body)) for _ in range(20)]
        await asyncio.sleep(0.5)
        process = stack.processes.pop("simulator")
        process.send_signal(signal.SIGTERM)
        replies = await asyncio.gather(*calls)
    assert [r.status_code for r in replies] == [200] * 20
    assert await asyncio.to_thread(process.wait, 30) == 0


def test_a_fewer_partitioned_topic_stops_a_process_with_a_clear_error(stack: Stack, tmp_path: Path) -> None:
    """The start-up layout check, as a user meets it: `sluice worker` refuses and says why."""
    settings = stack.settings.with_overrides(stage_partitions=12)
    done = subprocess.run(
        [sys.executable, "-m", "sluice", "worker"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1
    assert f"{settings.topic_prefix}requests: 6 partitions, declared 12" in done.stderr
    assert "Traceback" not in done.stderr
