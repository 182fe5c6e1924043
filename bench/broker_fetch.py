"""What one hop costs on the embedded broker (run by hand): delivery latency and broker CPU
against the consumer's fetch wait (`fetch.max.wait.ms`, SLUICE_CONSUMER_FETCH_WAIT_MS).

Apache Kafka parks a fetch and answers it as soon as data arrives, so there a long wait costs
neither latency nor CPU. Tansu polls its storage inside the wait instead, so on Tansu the
wait is a trade: a longer one delays every hop, a shorter one costs the broker CPU for every
consumer, busy or idle. This probe measures both: one producer sends a record every 37 ms to
a 6-partition topic and one consumer reads it, for several fetch waits.

    .venv/bin/python bench/broker_fetch.py [--waits 2,5,10,25,50,100] [--seconds 8]

Writes bench/results/broker_fetch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from harness import cpu_seconds

from sluice.edge.load import percentile
from sluice.local.broker import start_broker

RESULTS = Path(__file__).resolve().parent / "results" / "broker_fetch.json"
SEND_EVERY_S = 0.037  # not a multiple of any wait, so arrivals fall all over the fetch cycle


async def probe(
    bootstrap: str, broker_pid: int, wait_ms: int, seconds: float, topic_count: int
) -> dict[str, Any]:
    """Records go to the first topic; the consumer also subscribes to the others (a Sluice
    worker's one consumer spans six 6-partition topics)."""
    names = [f"probe-{wait_ms}-{i}-{uuid.uuid4().hex[:6]}" for i in range(topic_count)]
    topic = names[0]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, num_partitions=6, replication_factor=1) for name in names])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(*names, bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms)
    await producer.start()
    await consumer.start()
    latencies: list[float] = []
    try:
        await asyncio.sleep(1.5)  # assignment and first fetches

        async def read() -> None:
            async for record in consumer:
                (sent,) = struct.unpack("d", record.value or b"")
                latencies.append((time.perf_counter() - sent) * 1000)

        reader = asyncio.create_task(read())
        broker_before = cpu_seconds(broker_pid)
        started = time.perf_counter()
        sent = 0
        while time.perf_counter() - started < seconds:
            await producer.send_and_wait(topic, struct.pack("d", time.perf_counter()), key=str(sent).encode())
            sent += 1
            await asyncio.sleep(SEND_EVERY_S)
        await asyncio.sleep(2 * wait_ms / 1000 + 0.5)
        broker_cpu = cpu_seconds(broker_pid) - broker_before
        elapsed = time.perf_counter() - started
        reader.cancel()
    finally:
        await producer.stop()
        await consumer.stop()

    def pct(q: float) -> float:
        return round(percentile(latencies, q), 1)

    return {
        "fetch_wait_ms": wait_ms,
        "topics_fetched": topic_count,
        "records": sent,
        "received": len(latencies),
        "hop_latency_ms": {"p50": pct(50), "p99": pct(99), "max": round(max(latencies), 1)},
        "broker_cpu_share_of_a_core": round(broker_cpu / elapsed, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--waits", default="2,5,10,25,50,100")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--topics", default="1,6", help="topic counts the consumer subscribes to")
    args = parser.parse_args()
    broker = start_broker()
    runs = []
    try:
        for topic_count in (int(t) for t in args.topics.split(",")):
            for wait_ms in (int(w) for w in args.waits.split(",")):
                result = asyncio.run(
                    probe(broker.bootstrap, broker.process.pid, wait_ms, args.seconds, topic_count)
                )
                print(json.dumps(result))
                runs.append(result)
    finally:
        broker.stop()
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.write_text(json.dumps({"when": when, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
