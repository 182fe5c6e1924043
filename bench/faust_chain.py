"""The topology's floor (run by hand): Sluice's five hops with no Sluice code in them.

A worker whose five Faust agents only forward raw bytes along the contract's stage topics
(requests -> validated -> sanitized -> routed -> inferred -> responses) and emit one raw event
per hop, tuned exactly like Sluice's worker (same transport and fetch wait, linger, monitor,
no spinner, garbage collector settings). No validation, no model call, no pydantic, no HTTP.
Whatever this chain cannot do on a machine, Sluice cannot do there either: it is the ceiling
for the contract's topology on Faust + aiokafka + this broker.

    .venv/bin/python bench/faust_chain.py [--duration 20] [--rates 100,400]

Prints end-to-end latency percentiles and sustained throughput per offered rate, with the CPU
each process used; writes bench/results/faust_chain.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from harness import cpu_seconds, open_loop

from sluice.edge.load import percentile
from sluice.local.broker import start_broker
from sluice.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "faust_chain.json"
HOPS = ("requests", "validated", "sanitized", "routed", "inferred", "responses")
PAYLOAD_PAD = b"y" * 600  # about the size of a stage envelope


def run_chain_worker(bootstrap: str, prefix: str, fetch_wait_ms: int, linger_ms: float) -> None:
    """Child process: five forwarding agents, built on Sluice's own app factory and worker."""
    import faust

    from sluice.app import create_app
    from sluice.worker import install_fast_event_loop, settle_garbage_collector

    install_fast_event_loop()
    settings = Settings(
        kafka_bootstrap=bootstrap,
        app_id=f"chain-{prefix}",
        home=Path(f"/tmp/{prefix}"),
        consumer_fetch_wait_ms=fetch_wait_ms,
        producer_linger_ms=linger_ms,
    )
    (settings.home / "worker").mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    topics = [
        app.topic(f"{prefix}.{name}", key_type=bytes, value_type=bytes, value_serializer="raw", partitions=6)
        for name in HOPS
    ]
    events = f"{prefix}.events"
    ready_file = Path(f"/tmp/{prefix}.ready")

    def make_hop(source: Any, target: str, name: str) -> None:
        async def hop(stream: Any) -> None:
            async for event in stream.events():
                await app.producer.send(target, event.key, event.value, None, None, None)
                await app.producer.send(
                    events, event.key, b'{"stage":"' + name.encode() + b'"}', None, None, None
                )

        app.agent(source, name=name)(hop)

    for source, target in zip(topics[:-1], HOPS[1:], strict=True):
        make_hop(source, f"{prefix}.{target}", source.get_topic_name().rsplit(".", 1)[1])

    class QuietWorker(faust.Worker):  # type: ignore[misc]
        def on_setup_root_logger(self, logger: Any, level: int) -> None:
            self.spinner = None
            super().on_setup_root_logger(logger, level)

        async def on_startup_finished(self) -> None:
            await super().on_startup_finished()
            settle_garbage_collector()
            ready_file.touch()  # noqa: ASYNC240 - once, at start-up

    QuietWorker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


async def drive(
    bootstrap: str, prefix: str, rate: float, duration: float, pids: dict[str, int]
) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    consumer = AIOKafkaConsumer(
        f"{prefix}.responses", bootstrap_servers=bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=10
    )
    await producer.start()
    await consumer.start()
    latencies: list[float] = []
    expected = int(rate * duration)
    done = asyncio.Event()

    async def collect() -> None:
        while len(latencies) < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    (sent,) = struct.unpack_from("d", record.value or b"")
                    latencies.append((now - sent) * 1000)
        done.set()

    try:
        await asyncio.sleep(2)  # the consumer joins and seeks to the end
        collector = asyncio.create_task(collect())
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()

        async def one(i: int) -> None:
            value = struct.pack("d", time.perf_counter()) + PAYLOAD_PAD
            await producer.send(f"{prefix}.requests", value, key=f"k{i}".encode())

        await open_loop(rate, duration, one)
        await asyncio.wait_for(done.wait(), timeout=duration * 10 + 60)
        elapsed = time.perf_counter() - started
        used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        await collector
    finally:
        await producer.stop()
        await consumer.stop()

    def pct(q: float) -> float:
        return round(percentile(latencies, q), 1)

    return {
        "offered_rps": rate,
        "requests": expected,
        "throughput_rps": round(expected / elapsed, 1),
        "end_to_end_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99)},
        "cpu_ms_per_request": {name: round(seconds * 1000 / expected, 3) for name, seconds in used.items()},
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_chain_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rates", default="10,100,300,400")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--fetch-wait-ms", type=int, default=10, help="as SLUICE_CONSUMER_FETCH_WAIT_MS")
    parser.add_argument(
        "--linger-ms", type=float, default=Settings().producer_linger_ms, help="as SLUICE_PRODUCER_LINGER_MS"
    )
    args = parser.parse_args()
    broker = start_broker()
    runs = []
    try:
        prefix = f"chain{uuid.uuid4().hex[:6]}"
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                broker.bootstrap,
                prefix,
                str(args.fetch_wait_ms),
                str(args.linger_ms),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ready = Path(f"/tmp/{prefix}.ready")
            deadline = time.time() + 90
            while not ready.exists() and time.time() < deadline:
                time.sleep(0.2)
            pids = {"worker": child.pid, "broker": broker.process.pid}
            for rate in (float(r) for r in args.rates.split(",")):
                result = asyncio.run(drive(broker.bootstrap, prefix, rate, args.duration, pids))
                print(json.dumps(result))
                runs.append(result)
        finally:
            child.terminate()
            child.wait(20)
    finally:
        broker.stop()
    args.output.write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "hops": 5,
                "fetch_wait_ms": args.fetch_wait_ms,
                "linger_ms": args.linger_ms,
                "runs": runs,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
