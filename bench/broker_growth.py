"""How the embedded broker's CPU per record grows with what it stores (run by hand).

The embedded broker (Tansu, memory storage) keeps each produced batch as one object and, to
serve a fetch from a partition holding unread data, lists every batch object stored in that
partition, twice (once for the data, once to find there is no more). It never deletes a record:
retention is not applied and deleting records is not implemented. So its CPU per answer grows
with everything stored since it started. Apache Kafka finds an offset through its index, so a
production broker has no such growth.

This probe sends one record per produce request (as the gateway does, one request at a time) to
a topic at a steady rate while one consumer reads it with Sluice's 10 ms fetch wait, and reports
the broker's CPU per record in consecutive phases, for a few partition counts.

    .venv/bin/python bench/broker_growth.py [--partitions 6 24] [--phases 10] [--per-phase 1500]

Writes bench/results/broker_growth.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from harness import cpu_seconds

from sluice.local.broker import start_broker

RESULTS = Path(__file__).resolve().parent / "results"
READ_TIMEOUT_S = 30.0
RECORD = b'{"request_id":"0123456789abcdef","tenant":"acme","prompt":"' + b"x" * 900 + b'"}'


async def one_topic(partitions: int, phases: int, per_phase: int, rate: float) -> list[dict[str, Any]]:
    """Phases of `per_phase` single-record produce requests at `rate`, read as they land."""
    logs = Path(f"/tmp/sluice-broker-growth-{uuid.uuid4().hex[:6]}")
    broker = start_broker(log_path=logs / "tansu.log")
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        "growth", bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=10
    )
    rows: list[dict[str, Any]] = []
    read = 0
    reader: asyncio.Task[None] | None = None

    async def drain() -> None:
        nonlocal read
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            read += sum(len(records) for records in batches.values())

    try:
        await admin.start()
        await admin.create_topics([NewTopic("growth", partitions, 1)])
        await producer.start()
        await consumer.start()
        reader = asyncio.create_task(drain())
        sent = 0
        for phase in range(phases):
            cpu_before, started = cpu_seconds(broker.process.pid), time.perf_counter()
            for i in range(per_phase):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await producer.send_and_wait("growth", RECORD, key=f"{sent}".encode())
                sent += 1
            deadline = time.perf_counter() + READ_TIMEOUT_S
            while read < sent:  # the phase ends when the consumer has every record
                if reader.done():
                    reader.result()  # the reader failed: raise its error
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"consumer read {read} of {sent} records within {READ_TIMEOUT_S}s")
                await asyncio.sleep(0.01)
            cpu = cpu_seconds(broker.process.pid) - cpu_before
            rows.append(
                {
                    "phase": phase,
                    "stored_batches_per_partition_at_end": round(sent / partitions),
                    "broker_cpu_ms_per_record": round(cpu * 1000 / per_phase, 3),
                    "broker_cores": round(cpu / (time.perf_counter() - started), 3),
                }
            )
            print(f"partitions {partitions:3d} {rows[-1]}", flush=True)
    finally:
        if reader is not None:
            reader.cancel()
        await consumer.stop()
        await producer.stop()
        await admin.close()
        broker.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--partitions", type=int, nargs="+", default=[6, 24])
    parser.add_argument("--phases", type=int, default=10)
    parser.add_argument("--per-phase", type=int, default=1500, help="records per phase")
    parser.add_argument("--rate", type=float, default=400.0, help="records per second")
    args = parser.parse_args()
    load_start = os.getloadavg()
    by_partitions = {
        str(count): asyncio.run(one_topic(count, args.phases, args.per_phase, args.rate))
        for count in args.partitions
    }
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1_5_15_at_start": [round(x, 2) for x in load_start],
            "loadavg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {
            "record_bytes": len(RECORD),
            "records_per_produce_request": 1,
            "rate_per_s": args.rate,
            "records_per_phase": args.per_phase,
            "consumer_fetch_wait_ms": 10,
        },
        "by_partitions": by_partitions,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "broker_growth.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'broker_growth.json'}")


if __name__ == "__main__":
    main()
