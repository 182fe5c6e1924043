"""The least Sluice's stack can spend per answer, side by side with LiteLLM and Sluice (run by hand).

    .venv/bin/python bench/stack_floor.py [--rates 160 240 ...] [--duration 15]

Sluice's throughput on this box is bound by CPU across its processes. This bench asks how much of
that CPU the chosen stack takes before any of Sluice's own work: a *floor pipeline* built from
the same parts, doing nothing but carrying each request:

- an HTTP front door (aiohttp, as Sluice's gateway) that publishes each request's body to Kafka
  (aiokafka, as Sluice's gateway) and answers with the reply it reads back by correlation key;
- one Faust worker on Sluice's own Kafka transport (`sluice.kafka_transport`: short fetch wait,
  commit floor, acks only after the reply is published) that sends the body to the model through
  Sluice's model-call transport (httpx over aiohttp's pool) and publishes the model's reply;
- the embedded broker, and the same zero-latency mock model.

No checks, no stage events, no ClickHouse, no tenants: whatever Sluice does per request costs
more than this. The floor, Sluice's HTTP front door (every check on, every event in ClickHouse)
and the LiteLLM proxy (2 workers) are driven at the same offered rates by the same open-loop
generator, each Sluice and floor step on a fresh broker (as in bench/side_by_side.py, whose
processes and measuring this reuses). Results: bench/results/stack_floor.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from harness import machine, start_process, stop_processes, wait_until, zero_latency_settings
from side_by_side import (
    MASTER_KEY,
    MODEL,
    SUSTAINED,
    best_sustained,
    http_step,
    litellm_proxy,
    litellm_step,
    measured,
    sluice_step,
    wait_idle,
)

from sluice.local.broker import free_port, start_broker

RESULTS = Path(__file__).resolve().parent / "results"
REQUESTS, RESPONSES = "floor.requests", "floor.responses"
PARTITIONS = 6  # as Sluice's request and reply topics
IN_FLIGHT = 1000  # model calls in flight per worker, as Sluice's default
REPLY_TIMEOUT_S = 10.0


# --- the floor's worker: one Faust agent on Sluice's transport ----------------------------------


def run_worker(bootstrap: str, mock_url: str) -> None:
    import faust

    from sluice.kafka_transport import broker_url
    from sluice.offsets import UnfinishedRecords
    from sluice.providers.pooled_transport import PooledTransport

    app = faust.App(
        f"floor-{uuid.uuid4().hex[:6]}",
        broker=broker_url(bootstrap, 10),
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        topic_partitions=PARTITIONS,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=3,
        broker_rebalance_timeout=3,
        broker_heartbeat_interval=0.5,
        producer_linger=0.001,
        stream_buffer_maxsize=4096,
        value_serializer="raw",
        key_serializer="raw",
    )
    unfinished = UnfinishedRecords()
    app.unfinished_records = unfinished  # the commit floor Sluice's agents keep
    requests = app.topic(REQUESTS, key_type=bytes, value_type=bytes, partitions=PARTITIONS)
    responses = app.topic(RESPONSES, key_type=bytes, value_type=bytes, partitions=PARTITIONS)
    model = httpx.AsyncClient(transport=PooledTransport(max_connections=IN_FLIGHT), timeout=10.0)
    url = f"{mock_url}/chat/completions"

    @app.agent(requests)
    async def carry(stream: Any) -> None:
        manual = stream.noack()
        slots = asyncio.Semaphore(IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()

        async def one(event: Any) -> None:
            try:
                reply = await model.post(
                    url, content=event.value, headers={"content-type": "application/json"}
                )
                sent = await responses.send(key=event.key, value=reply.content)
                await sent  # acked only after the reply is on Kafka, as Sluice's agents
                with unfinished.acking(event.message):
                    await manual.ack(event)
                unfinished.finished(event.message.tp, event.message.offset)
            finally:
                slots.release()

        async for event in manual.events():
            unfinished.taken(event.message.tp, event.message.offset)
            await slots.acquire()
            task = asyncio.create_task(one(event))
            running.add(task)
            task.add_done_callback(running.discard)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


# --- the floor's front door: aiohttp in, Kafka out and back ------------------------------------


async def serve_gateway(bootstrap: str, port: int) -> None:
    from aiohttp import web
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks="all")
    replies = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        fetch_max_wait_ms=10,
        enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    await producer.start()
    await replies.start()
    replies.assign([TopicPartition(RESPONSES, p) for p in range(PARTITIONS)])
    waiting: dict[bytes, asyncio.Future[bytes]] = {}

    async def read_replies() -> None:
        async for record in replies:
            future = waiting.pop(record.key, None) if record.key is not None else None
            if future is not None and not future.done() and record.value is not None:
                future.set_result(record.value)

    async def chat(request: web.Request) -> web.Response:
        body = await request.read()
        key = uuid.uuid4().hex.encode()
        answer = asyncio.get_running_loop().create_future()
        waiting[key] = answer
        try:
            await (await producer.send(REQUESTS, body, key=key))
            value = await asyncio.wait_for(answer, REPLY_TIMEOUT_S)
        except TimeoutError:
            return web.json_response({"error": "timeout"}, status=504)
        finally:
            waiting.pop(key, None)
        return web.Response(body=value, content_type="application/json")

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    reading = asyncio.create_task(read_replies())
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await reading
    finally:
        await runner.cleanup()
        await replies.stop()
        await producer.stop()


async def create_topics(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in (REQUESTS, RESPONSES)])
    finally:
        await admin.close()


# --- the run ------------------------------------------------------------------------------------


def child(logs: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    logs.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, __file__, name, *args],
        stdout=(logs / f"floor-{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


@contextmanager
def floor_stack(home: Path, mock_url: str) -> Iterator[tuple[int, dict[str, int]]]:
    """A fresh broker with the floor's worker and front door; yields (HTTP port, pids)."""
    logs = home / "logs"
    broker = start_broker(log_path=logs / "tansu.log")
    asyncio.run(create_topics(broker.bootstrap))
    port = free_port()
    processes = [
        child(logs, "worker", broker.bootstrap, mock_url),
        child(logs, "gateway", broker.bootstrap, str(port)),
    ]
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, "floor gateway")
        probe = {"model": MODEL, "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 8}
        chat = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_until(lambda: httpx.post(chat, json=probe, timeout=15).status_code == 200, "floor worker", 90)
        yield port, {"broker": broker.process.pid, "worker": processes[0].pid, "gateway": processes[1].pid}
    finally:
        stop_processes(processes)
        broker.stop()


def floor_step(home: Path, mock_url: str, mock_pid: int, rate: float, duration: float) -> dict[str, Any]:
    with floor_stack(home / f"floor-{rate:g}", mock_url) as (port, pids):
        pids = pids | {"mock": mock_pid}
        http_step(port, None, MODEL, 10, 2, f"floor-warm-{rate:g}")  # discarded
        wait_idle(pids, limit_s=30)
        return measured(pids, lambda: http_step(port, None, MODEL, rate, duration, f"floor-{rate:g}"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(f"/tmp/sluice-floor-{uuid.uuid4().hex[:6]}")
    logs = home / "logs"
    base = zero_latency_settings(home, "127.0.0.1:9")
    mock = start_process(base, logs, "simulator")
    wait_until(
        lambda: httpx.get(base.simulator_url.removesuffix("/v1") + "/healthz").status_code == 200, "mock"
    )
    systems = ["litellm", "floor", "sluice_http"]
    stopped: set[str] = set()
    by_rate: list[dict[str, Any]] = []
    try:
        with ExitStack() as exits:
            litellm_port, litellm = exits.enter_context(litellm_proxy(base.simulator_url, logs, 2))
            litellm_pids = {"litellm": litellm.pid, "mock": mock.pid}
            wait_idle(litellm_pids)
            http_step(litellm_port, MASTER_KEY, MODEL, 10, 2, "warm")  # discarded
            for rate in args.rates:
                row: dict[str, Any] = {"offered_rps": rate}
                for system in systems:
                    if system in stopped:
                        continue
                    if system == "litellm":
                        row[system] = litellm_step(litellm_port, litellm_pids, rate, args.duration)
                    elif system == "floor":
                        row[system] = floor_step(home, base.simulator_url, mock.pid, rate, args.duration)
                    else:
                        step, sent, stored = sluice_step(base, mock.pid, system, rate, args.duration)
                        row[system] = step | {"clickhouse_requests": stored, "requests_sent": sent}
                    print(f"{rate:>6g} req/s {system:12s} {row[system]}", flush=True)
                    if not row[system]["sustained"]:
                        stopped.add(system)  # a higher rate would only measure a backlog
                by_rate.append(row)
                if stopped >= set(systems):
                    break
    finally:
        stop_processes([mock])
    return {"by_rate": by_rate}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", nargs="?", choices=["worker", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("role_args", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[120, 160, 200, 240, 280, 320, 400, 480, 560, 640, 800, 960, 1120],
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per step")
    args = parser.parse_args()
    if args.role == "worker":
        run_worker(*args.role_args)
        return
    if args.role == "gateway":
        asyncio.run(serve_gateway(args.role_args[0], int(args.role_args[1])))
        return
    load_start = os.getloadavg()
    measured_run = run(args)
    by_rate = measured_run["by_rate"]
    best = {system: best_sustained(by_rate, system) for system in ("litellm", "floor", "sluice_http")}
    litellm = best["litellm"]
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(load_start),
        "sustained_goodput_rps": best,
        "ratio_to_litellm": {k: round(v / litellm, 2) if litellm else None for k, v in best.items()},
        "settings": {
            "duration_s_per_step": args.duration,
            "sustained_means": SUSTAINED,
            "floor": {
                "partitions": PARTITIONS,
                "consumer_fetch_wait_ms": 10,
                "reply_fetch_wait_ms": 10,
                "producer_linger_ms": 1,
                "model_calls_in_flight": IN_FLIGHT,
            },
            "litellm_workers": 2,
        },
        **measured_run,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stack_floor.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("sustained_goodput_rps", "ratio_to_litellm")}))


if __name__ == "__main__":
    main()
