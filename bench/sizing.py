"""Sizing inputs for docs/scaling.md (run by hand): each process run by its own command, as a
deployment runs it, and its CPU cost per request measured from /proc.

1. Processes: `sluice gateway`, `worker`, `sink`, `simulator` on the embedded broker; open-loop
   OpenAI-compatible HTTP load through the gateway at a rate this shared 2-core box sustains.
   CPU milliseconds per answered request, per process (CPU time does not swing with the
   machine's other load the way wall-clock throughput does).
2. Sink: synthetic stage events published first, then a fresh sink started: rows per second
   into ClickHouse (embedded chdb) and sink CPU per row.

    .venv/bin/python bench/sizing.py [--rate 30] [--duration 20] [--events 30000]
    .venv/bin/python bench/sizing.py --report      # only rewrite docs/scaling.md from results

Writes bench/results/sizing.json (with machine load) and docs/scaling.md (from that file and
the committed worker_cpu.json, pipeline.json and analytics.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from harness import cpu_seconds, open_loop, start_process, wait_until
from prometheus_client.parser import text_string_to_metric_families
from sizing_report import write_report

from sluice.edge.load import percentile
from sluice.local.broker import free_port, start_broker
from sluice.settings import Settings
from sluice.warehouse.synthetic import synthetic_requests

RESULTS = Path(__file__).resolve().parent / "results"


def ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz", timeout=2).status_code == 200


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def http_load(base: str, rate: float, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        start = time.perf_counter()

        async def one(i: int) -> None:
            scheduled = start + i / rate
            body = {"model": "auto", "max_tokens": 32, "messages": [{"role": "user", "content": f"q {i}"}]}
            try:
                reply = await http.post(f"{base}/v1/chat/completions", json=body)
                key = str(reply.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1
            if key == "200":
                latencies.append((time.perf_counter() - scheduled) * 1000)  # from scheduled send time

        await open_loop(rate, duration, one)
        wall = time.perf_counter() - start
    ok = statuses.get("200", 0)
    return {
        "rate": rate,
        "duration_s": duration,
        "sent": int(rate * duration),
        "statuses": statuses,
        "goodput_rps": round(ok / wall, 1),
        "latency_from_schedule_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p99": round(percentile(latencies, 99), 1),
        },
    }


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def measure_processes(root: Path, bootstrap: str, rate: float, duration: float) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:6]
    settings = Settings(
        home=root / "home",
        kafka_bootstrap=bootstrap,
        topic_prefix=f"size{unique}.",
        app_id=f"sluice-size-{unique}",
        sink_group=f"sink-size-{unique}",
        clickhouse_dsn=f"chdb://{root / 'clickhouse'}",
        http_port=free_port(),
        worker_port=free_port(),
        sink_port=free_port(),
        simulator_port=free_port(),
        simulator_latency_ms=200,
        simulator_latency_jitter_ms=50,
    )
    logs = root / "logs"
    urls = {
        "simulator": settings.simulator_url.removesuffix("/v1"),
        "sink": f"http://127.0.0.1:{settings.sink_port}",
        "worker": f"http://127.0.0.1:{settings.worker_port}",
        "gateway": f"http://127.0.0.1:{settings.http_port}",
    }
    processes = {name: start_process(settings, logs, name) for name in ("simulator", "sink", "worker")}
    try:
        for name in ("simulator", "sink", "worker"):
            wait_until(lambda name=name: ready(urls[name]), name, timeout=120)  # type: ignore[misc]
        processes["gateway"] = start_process(settings, logs, "gateway")
        wait_until(lambda: ready(urls["gateway"]), "gateway", timeout=120)
        await http_load(urls["gateway"], 10, 3)  # warm up: connections, caches, JIT-free but lazy imports
        before = {name: cpu_seconds(p.pid) for name, p in processes.items()}
        load = await http_load(urls["gateway"], rate, duration)
        await asyncio.sleep(3)  # the sink's last batch and the events behind the answers
        after = {name: cpu_seconds(p.pid) for name, p in processes.items()}
        answered = sum(load["statuses"].values())
        events = metric(urls["sink"], "sluice_sink_rows_total", table="events")
        return {
            "load": load,
            "cpu_ms_per_request": {n: round((after[n] - before[n]) * 1000 / answered, 3) for n in processes},
            "events_per_request": round(events / max(1, answered + 10 * 3), 2),
            "settings": {"simulator_latency_ms": 200, "fetch_wait_ms": settings.consumer_fetch_wait_ms},
        }
    finally:
        for process in processes.values():
            stop(process)


async def measure_sink(root: Path, bootstrap: str, events: int) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:6]
    settings = Settings(
        home=root / "sinkhome",
        kafka_bootstrap=bootstrap,
        topic_prefix=f"sink{unique}.",
        sink_group=f"sink-only-{unique}",
        clickhouse_dsn=f"chdb://{root / 'sinkclickhouse'}",
        sink_port=free_port(),
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    published = 0
    try:
        topic = f"{settings.topic_prefix}events"
        from sluice.bus import ensure_topics

        await ensure_topics(settings)
        for request in synthetic_requests(events // 5 + 1, spread_minutes=30, prefix=unique):
            for event in request:
                value = orjson.dumps(event.model_dump(mode="json"))
                await producer.send(topic, value, key=event.correlation_id.encode())
                published += 1
        await producer.flush()
    finally:
        await producer.stop()
    url = f"http://127.0.0.1:{settings.sink_port}"
    sink = start_process(settings, root / "logs", "sink")
    try:
        wait_until(lambda: ready(url), "sink", timeout=120)
        started, cpu0 = time.perf_counter(), cpu_seconds(sink.pid)
        wait_until(lambda: metric(url, "sluice_sink_rows_total", table="events") >= published, "ingest", 600)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(sink.pid) - cpu0
        rows = metric(url, "sluice_sink_rows_total")  # events + requests rows
    finally:
        stop(sink)
    return {
        "events": published,
        "rows": int(rows),
        "seconds": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed),
        "events_per_s": round(published / elapsed),
        "sink_cpu_ms_per_1k_rows": round(cpu * 1000 / rows * 1000, 1),
        "batch_size": settings.sink_batch_size,
        "clickhouse": "embedded chdb (same engine as the server; server inserts go over HTTP)",
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sluice-sizing-") as tmp:
        root = Path(tmp)
        broker = start_broker(log_path=root / "broker.log")
        try:
            broker_cpu0 = cpu_seconds(broker.process.pid)
            processes = await measure_processes(root, broker.bootstrap, args.rate, args.duration)
            answered = sum(processes["load"]["statuses"].values())
            processes["cpu_ms_per_request"]["broker (embedded Tansu)"] = round(
                (cpu_seconds(broker.process.pid) - broker_cpu0) * 1000 / answered, 3
            )
            sink = await measure_sink(root, broker.bootstrap, args.events)
        finally:
            broker.stop()
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1_5_15_at_start": [round(x, 2) for x in load_start],
            "loadavg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
            "note": "shared 2-core box: other engineers' jobs ran at the same time",
        },
        "processes": processes,
        "sink": sink,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=30.0, help="HTTP requests/s through the gateway")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--events", type=int, default=30_000, help="events for the sink measurement")
    parser.add_argument("--report", action="store_true", help="only regenerate docs/scaling.md")
    args = parser.parse_args()
    if not args.report:
        result = asyncio.run(run(args))
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "sizing.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    print(f"wrote {write_report(RESULTS)}")


if __name__ == "__main__":
    main()
