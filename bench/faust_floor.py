"""The floor under the pipeline (run by hand): CPU cost of one bare Faust hop on this machine.

A Sluice request crosses five stage hops, and each hop is one Faust consume plus two produces
(the next stage's message and the stage event). This measures a Faust agent that does nothing
but that, on the same transport, codec-free (raw bytes), so the figure is what Faust and
aiokafka cost before any Sluice code runs.

    .venv/bin/python bench/faust_floor.py [--messages 20000]

Writes bench/results/faust_floor.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from harness import cpu_seconds

from sluice.local.broker import start_broker

RESULTS = Path(__file__).resolve().parent / "results" / "faust_floor.json"


def run_hop_worker(bootstrap: str, prefix: str, produces: int) -> None:
    """Child process: a Faust app whose one agent forwards every record `produces` times."""
    import faust

    from sluice.kafka_transport import broker_url
    from sluice.worker import install_fast_event_loop

    install_fast_event_loop()
    app = faust.App(
        f"floor-{prefix}",
        broker=broker_url(bootstrap, 10),
        producer_linger=0.005,
        broker_commit_interval=0.25,
        topic_partitions=6,
        web_enabled=False,
    )
    source = app.topic(f"{prefix}.in", key_type=bytes, value_type=bytes, value_serializer="raw")
    target = f"{prefix}.out"

    @app.agent(source)
    async def hop(stream: object) -> None:
        async for event in stream.events():  # type: ignore[attr-defined]
            for _ in range(produces):
                await app.producer.send(target, event.key, event.value, None, None, None)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


async def drive(
    bootstrap: str, prefix: str, messages: int, produces: int, worker_pid: int
) -> dict[str, float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    consumer = AIOKafkaConsumer(f"{prefix}.out", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    try:
        payload = b'{"x": "' + b"y" * 600 + b'"}'  # about the size of a stage envelope
        await producer.send_and_wait(f"{prefix}.in", payload, key=b"warm")
        expected, seen = 1 * produces, 0
        while seen < expected:
            seen += sum(len(b) for b in (await consumer.getmany(timeout_ms=1000)).values())
        before = cpu_seconds(worker_pid)
        started = time.perf_counter()
        for i in range(messages):
            await producer.send(f"{prefix}.in", payload, key=f"k{i}".encode())
        await producer.flush()
        expected, seen = messages * produces, 0
        while seen < expected:
            seen += sum(len(b) for b in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values())
        elapsed = time.perf_counter() - started
        used = cpu_seconds(worker_pid) - before
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "messages": messages,
        "produces_per_message": produces,
        "wall_s": round(elapsed, 2),
        "worker_cpu_s": round(used, 3),
        "worker_cpu_us_per_hop": round(used / messages * 1e6, 1),
        "hops_per_s_one_core": round(messages / used, 0),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_hop_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    broker = start_broker()
    results = []
    try:
        for produces in (1, 2):
            prefix = f"floor{uuid.uuid4().hex[:6]}"
            child = subprocess.Popen(
                [sys.executable, __file__, "--child", broker.bootstrap, prefix, str(produces)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(8)  # join the group and get partitions assigned
                result = asyncio.run(drive(broker.bootstrap, prefix, args.messages, produces, child.pid))
            finally:
                child.terminate()
                child.wait(20)
            print(json.dumps(result))
            results.append(result)
    finally:
        broker.stop()
    per_request = {
        "hops": 5,
        "cpu_ms_one_request_floor": round(5 * results[-1]["worker_cpu_us_per_hop"] / 1000, 3),
    }
    per_request["max_rps_one_core"] = round(1000 / per_request["cpu_ms_one_request_floor"], 0)
    print(json.dumps(per_request))
    RESULTS.write_text(
        json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": results,
                    "sluice_request_floor": per_request}, indent=2) + "\n"
    )  # fmt: skip


if __name__ == "__main__":
    main()
