"""Pipeline benchmark (run by hand): sustained goodput (successful answers per second) of ONE
worker, and pipeline overhead (end-to-end latency minus model time) at 100 req/s, against the
simulator with 0 ms and with 1 s model latency. Everything real: Tansu broker, worker process,
simulator over HTTP.

    .venv/bin/python bench/pipeline.py [--quick]

Writes bench/results/pipeline.json. The machine has 2 cores shared by the broker, the worker,
the simulator and this load generator, so the numbers are for the whole box, not the worker alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from harness import open_loop, start_process, wait_pipeline_ready

from sluice.edge.client import SluiceClient
from sluice.edge.load import percentile, run_load
from sluice.local.broker import free_port, start_broker
from sluice.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"


async def model_latency_by_request(settings: Settings) -> dict[str, float]:
    """request_id -> model latency (ms) from the infer events."""
    topic = f"{settings.topic_prefix}events"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: dict[str, float] = {}

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=20000)).values():
                for record in batch:
                    event = orjson.loads(record.value or b"{}")
                    if event.get("stage") == "infer" and "model_latency_ms" in event.get("attributes", {}):
                        found[event["request_id"]] = float(event["attributes"]["model_latency_ms"])
        return found
    finally:
        await consumer.stop()


async def measure(settings: Settings, rate: float, duration: float) -> dict[str, Any]:
    async with SluiceClient(settings=settings, timeout_s=120) as client:
        await client.request("warm up")

        def make(i: int) -> dict[str, Any]:
            return {
                "messages": f"benchmark question {i}",
                "max_tokens": 32,
                "correlation_id": f"bench-{uuid.uuid4().hex}",
            }

        started = time.perf_counter()
        report = await run_load(client, rate, duration, make_request=make, settle_s=60)
        elapsed = time.perf_counter() - started
    return {
        "rate": rate,
        "duration_s": duration,
        "wall_s": round(elapsed, 2),
        **report.summary(),
        "_latencies": report.latencies_ms,
    }


async def overhead(settings: Settings, rate: float, duration: float) -> dict[str, Any]:
    """Per request: client-observed latency minus the model call's own latency."""
    async with SluiceClient(settings=settings, timeout_s=120) as client:
        await client.request("warm up")
        observed: dict[str, float] = {}

        async def one(i: int) -> None:
            sent = time.perf_counter()
            response = await client.request(f"overhead {i}", max_tokens=32)
            observed[response.request_id] = (time.perf_counter() - sent) * 1000

        await open_loop(rate, duration, one)
    model = await model_latency_by_request(settings)
    overheads = [observed[rid] - model[rid] for rid in observed if rid in model]
    return {
        "rate": rate,
        "requests": len(observed),
        "end_to_end_ms": {f"p{q}": round(percentile(list(observed.values()), q), 1) for q in (50, 95, 99)},
        "overhead_ms": {f"p{q}": round(percentile(overheads, q), 1) for q in (50, 95, 99)},
    }


def run_case(model_latency_ms: float, args: argparse.Namespace) -> dict[str, Any]:
    broker = start_broker()
    home = Path(f"/tmp/sluice-bench-{uuid.uuid4().hex[:6]}")
    settings = Settings(
        home=home,
        kafka_bootstrap=broker.bootstrap,
        simulator_port=free_port(),
        simulator_seed=1,
        simulator_latency_ms=model_latency_ms,
        simulator_latency_jitter_ms=0,
        broker_session_timeout_s=3,
        broker_rebalance_timeout_s=3,
        broker_heartbeat_interval_s=0.5,
    )
    logs = home / "logs"
    sim = start_process(settings, logs, "simulator")
    worker = start_process(settings, logs, "worker")
    try:
        wait_pipeline_ready(settings, worker)
        print(f"\n== model latency {model_latency_ms:.0f} ms ==", flush=True)
        # The overhead run goes first, on a fresh pipeline: after the saturation run below the
        # broker and worker still carry its backlog effects, which would be measured as overhead.
        at_100 = asyncio.run(overhead(settings, 100.0, args.overhead_duration))
        print(
            f"at 100 req/s: end-to-end p50/p95/p99 {at_100['end_to_end_ms']}, "
            f"pipeline overhead p50/p95/p99 {at_100['overhead_ms']}",
            flush=True,
        )
        sustained = asyncio.run(measure(settings, args.rate, args.duration))
        latencies = sustained.pop("_latencies")
        print(
            f"offered {args.rate} req/s for {args.duration}s: answered {sustained['answered']}/"
            f"{sustained['sent']}, {sustained['succeeded']} successfully; goodput {sustained['goodput_rps']} "
            f"req/s (ratio to offered {sustained['goodput_rps'] / args.rate:.2f}); "
            f"latency p50/p95/p99 {percentile(latencies, 50):.0f}/{percentile(latencies, 95):.0f}/"
            f"{percentile(latencies, 99):.0f} ms",
            flush=True,
        )
        return {"model_latency_ms": model_latency_ms, "sustained": sustained, "at_100_rps": at_100}
    finally:
        for process in (worker, sim):
            process.terminate()
            process.wait(20)
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=400.0, help="offered load for the throughput run")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--overhead-duration", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke check")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.overhead_duration = 5.0, 5.0
    cases = [run_case(latency, args) for latency in (0.0, 1000.0)]
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "offered_rate": args.rate,
        "cases": cases,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
