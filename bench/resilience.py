"""Resilience benchmark (run by hand): failover while the primary model is down mid-load, and the
response cache's hit rate on a workload where 40 % of requests repeat. Everything real: Tansu
broker, one worker process, the simulator over HTTP; default breaker settings.

    /work/venv/bin/python bench/resilience.py [--rate 150] [--duration 30] [--quick]

Failover: routed envelopes (sim-small, fallbacks sim-medium and sim-large) are published straight
onto the routed topic at `--rate`; sim-small is taken down at 1/6 of the run and brought back at
1/2. Reported: success rate, who answered, latency percentiles, and when the breaker opened and
closed relative to the fault and the recovery (from its events on sluice.events).
Cache: 1,000 requests through the whole pipeline over 4 tenants, temperature 0, 40 % repeats of
an earlier request of the same tenant (each prompt also sent by every tenant once).
Writes bench/results/resilience.json and resilience.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import start_process, wait_pipeline_ready  # noqa: E402

from schemas import Envelope, Request, Response, RouteDecision  # noqa: E402
from sluice.codec import encode  # noqa: E402
from sluice.edge.client import SluiceClient  # noqa: E402
from sluice.edge.load import percentile  # noqa: E402
from sluice.local.broker import free_port, start_broker  # noqa: E402
from sluice.outcome import utcnow  # noqa: E402
from sluice.settings import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "resilience.json"
SUMMARY = ROOT / "bench" / "results" / "resilience.txt"


async def events_of(settings: Settings) -> list[dict[str, Any]]:
    topic = f"{settings.topic_prefix}events"
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[dict[str, Any]] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=20000)).values():
                found.extend(orjson.loads(r.value or b"{}") for r in batch)
        return found
    finally:
        await consumer.stop()


def fault(settings: Settings, model: str, mode: str) -> float:
    root = settings.simulator_url.removesuffix("/v1")
    httpx.post(f"{root}/admin/faults", json={"model": model, "mode": mode}).raise_for_status()
    return time.time()


def routed(settings: Settings, index: int) -> Envelope:
    now = utcnow()
    correlation_id = f"bench-{index}-{uuid.uuid4().hex[:8]}"
    return Envelope(
        request_id=str(uuid.uuid4()),
        correlation_id=correlation_id,
        tenant="bench",
        reply_to=f"{settings.topic_prefix}responses",
        received_at=now,
        deadline_at=now + timedelta(seconds=30),
        request=Request.model_validate(
            {
                "correlation_id": correlation_id,
                "tenant": "bench",
                "messages": [{"role": "user", "content": f"failover question {index}"}],
                "max_tokens": 32,
            }
        ),
        route=RouteDecision(model="sim-small", reason="bench", fallbacks=["sim-medium", "sim-large"]),
    )


async def failover(settings: Settings, rate: float, duration: float) -> dict[str, Any]:
    total, down_at, up_at = int(rate * duration), duration / 6, duration / 2
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, linger_ms=2)
    await producer.start()
    results: list[tuple[Response, float]] = []
    marks: dict[str, float] = {}
    async with SluiceClient(settings=settings, timeout_s=120) as client:

        async def one(index: int) -> None:
            envelope = routed(settings, index)
            future = client.expect(envelope.correlation_id, tenant=envelope.tenant)
            sent = time.perf_counter()
            topic = f"{settings.topic_prefix}routed"
            await producer.send(topic, encode(envelope), key=envelope.correlation_id.encode())
            response = await client.wait(envelope.correlation_id, future)
            results.append((response, (time.perf_counter() - sent) * 1000))

        started, tasks = time.monotonic(), []
        for index in range(total):
            at = started + index / rate
            if "down" not in marks and at - started >= down_at:
                marks["down"] = await asyncio.to_thread(fault, settings, "sim-small", "down")
            if "up" not in marks and at - started >= up_at:
                marks["up"] = await asyncio.to_thread(fault, settings, "sim-small", "none")
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)
    await producer.stop()
    transitions = sorted(
        (
            e
            for e in await events_of(settings)
            if e.get("tenant") == "_system" and e.get("model") == "sim-small"
        ),
        key=lambda e: str(e["ts"]),
    )

    def at(event: dict[str, Any]) -> float:
        return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()

    opened = [at(e) for e in transitions if e["status"] == "breaker_open" and at(e) >= marks["down"]]
    closed = [at(e) for e in transitions if e["status"] == "breaker_closed" and at(e) >= marks["up"]]
    latencies = [ms for _, ms in results]
    ok = sum(r.status.value == "ok" for r, _ in results)
    return {
        "rate": rate,
        "duration_s": duration,
        "requests": total,
        "answered": len(results),
        "ok": ok,
        "success_rate": round(ok / total, 6),
        "answered_by": {
            m: sum(r.model == m for r, _ in results) for m in ("sim-small", "sim-medium", "sim-large")
        },
        "latency_ms": {f"p{q}": round(percentile(latencies, q), 1) for q in (50, 95, 99)},
        "breaker_open_after_fault_s": round(opened[0] - marks["down"], 3) if opened else None,
        "breaker_closed_after_recovery_s": round(closed[0] - marks["up"], 3) if closed else None,
        "transitions": [e["status"] for e in transitions],
    }


async def cache(settings: Settings, total: int = 1000) -> dict[str, Any]:
    rng = random.Random(11)
    tenants = ["t0", "t1", "t2", "t3"]
    run = "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:8])  # no digits: not PII-like
    sent: dict[str, list[str]] = {t: [] for t in tenants}
    plan: list[tuple[str, str, bool]] = []
    for i in range(total):
        tenant = tenants[i % 4]
        if i % 5 in (3, 4) and sent[tenant]:
            plan.append((tenant, rng.choice(sent[tenant]), True))
        else:
            prompt = f"cache question {run} number {i // 4}"
            sent[tenant].append(prompt)
            plan.append((tenant, prompt, False))
    crossed = hits = 0
    async with SluiceClient(settings=settings, timeout_s=120) as client:
        for start in range(0, total, 50):  # batches: a repeat is sent after its original answered
            batch = plan[start : start + 50]
            firsts = [(t, p) for t, p, repeat in batch if not repeat]
            repeats = [(t, p) for t, p, repeat in batch if repeat]
            for group, is_repeat in ((firsts, False), (repeats, True)):
                replies = await asyncio.gather(
                    *(client.request(p, tenant=t, temperature=0, max_tokens=32) for t, p in group)
                )
                hits += sum(r.cached for r in replies)
                crossed += sum(r.cached for r in replies) if not is_repeat else 0
    repeats = sum(repeat for _, _, repeat in plan)
    return {
        "requests": total,
        "repeat_share": round(repeats / total, 4),
        "hits": hits,
        "hit_rate": round(hits / total, 4),
        "first_sends_answered_from_cache": crossed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="a short run, for a smoke check")
    args = parser.parse_args()
    if args.quick:
        args.rate, args.duration = 50.0, 12.0
    broker = start_broker()
    home = Path(f"/tmp/sluice-bench-resilience-{uuid.uuid4().hex[:6]}")
    settings = Settings(
        home=home,
        kafka_bootstrap=broker.bootstrap,
        simulator_port=free_port(),
        simulator_seed=1,
        simulator_latency_ms=50,
        simulator_latency_jitter_ms=10,
        broker_session_timeout_s=3,
        broker_rebalance_timeout_s=3,
        broker_heartbeat_interval_s=0.5,
    )
    logs = home / "logs"
    sim, worker = start_process(settings, logs, "simulator"), start_process(settings, logs, "worker")
    try:
        wait_pipeline_ready(settings, worker)
        over = asyncio.run(failover(settings, args.rate, args.duration))
        print(f"failover: {json.dumps(over)}", flush=True)
        cached = asyncio.run(cache(settings))
        print(f"cache: {json.dumps(cached)}", flush=True)
    finally:
        for process in (worker, sim):
            process.terminate()
            process.wait(20)
        broker.stop()
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "breaker": {
            k: getattr(settings, f"breaker_{k}")
            for k in ("window_s", "min_calls", "failure_rate", "open_s", "half_open_probes")
        },
        "failover": over,
        "cache": cached,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    SUMMARY.write_text(
        f"resilience bench {result['when']} ({result['machine']['cpus']} cpus, shared)\n"
        f"failover at {over['rate']:.0f} req/s for {over['duration_s']:.0f}s, primary down "
        f"{over['duration_s'] / 6:.0f}s..{over['duration_s'] / 2:.0f}s: "
        f"{over['ok']}/{over['requests']} ok ({over['success_rate']:.4%}), "
        f"answered by {over['answered_by']}\n"
        f"  latency p50/p95/p99 ms: {over['latency_ms']}\n"
        f"  breaker opened {over['breaker_open_after_fault_s']}s after the fault, "
        f"closed {over['breaker_closed_after_recovery_s']}s after recovery ({result['breaker']})\n"
        f"cache: {cached['hits']}/{cached['requests']} hits ({cached['hit_rate']:.1%}) with "
        f"{cached['repeat_share']:.0%} repeats; first sends answered from cache: "
        f"{cached['first_sends_answered_from_cache']}\n"
    )
    print(f"\nwrote {RESULTS} and {SUMMARY}")


if __name__ == "__main__":
    main()
