"""HTTP front door benchmark (run by hand): what the OpenAI-compatible gateway adds over the
Kafka client path (SluiceClient), at a steady 100 req/s. Everything real: Tansu broker, one
worker process, the simulator over HTTP, and the gateway in its own process (as `sluice up`
runs it apart from the load generator).

    .venv/bin/python bench/front_door.py [--duration 20] [--quick]

The two paths alternate (kafka, http, kafka, http) on the same stack, so drift in the shared
machine's load hits both. Latency is client-observed: send -> answer. The overhead reported is
the difference of the two paths' percentiles. Both the load generator and the gateway run on
uvloop, and a short warm-up on each path is discarded. Writes
bench/results/front_door.json and front_door.txt.
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

import aiohttp
import httpx
from harness import open_loop, start_process, stop_processes, wait_pipeline_ready, wait_until

from sluice.edge.client import SluiceClient
from sluice.edge.load import percentile
from sluice.local.broker import free_port, start_broker
from sluice.settings import Settings
from sluice.tenants import QuotaRules, TenantConfig

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "benchmark question about the front door"
MAX_TOKENS = 32


async def paced(rate: float, duration: float, one: Any) -> list[float]:
    """Open-loop load of `one(i)`; the latencies (ms) of the calls that returned True."""
    latencies: list[float] = []

    async def timed(i: int) -> None:
        sent = time.perf_counter()
        if await one(i):
            latencies.append((time.perf_counter() - sent) * 1000)

    await open_loop(rate, duration, timed)
    return latencies


async def kafka_path(settings: Settings, rate: float, duration: float) -> tuple[list[float], int]:
    failures = 0
    async with SluiceClient(settings=settings, timeout_s=120) as client:
        await client.request("warm up")

        async def one(i: int) -> bool:
            nonlocal failures
            response = await client.request(f"{PROMPT} {i}", max_tokens=MAX_TOKENS)
            failures += response.status.value != "ok"
            return response.status.value == "ok"

        return await paced(rate, duration, one), failures


async def http_path(url: str, rate: float, duration: float) -> tuple[list[float], int]:
    failures = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base_url=url, connector=connector) as http:

        async def call(content: str) -> bool:
            body = {
                "model": "auto",
                "messages": [{"role": "user", "content": content}],
                "max_tokens": MAX_TOKENS,
            }
            async with http.post("/v1/chat/completions", json=body) as reply:
                await reply.read()
                return reply.status == 200

        await call("warm up")

        async def one(i: int) -> bool:
            nonlocal failures
            ok = await call(f"{PROMPT} {i}")
            failures += not ok
            return ok

        return await paced(rate, duration, one), failures


def summary(latencies: list[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(latencies, q), 1) for q in (50, 90, 99)} | {"n": len(latencies)}


async def drain(settings: Settings, quick_ms: float = 1000.0, limit_s: float = 180.0) -> float:
    """Wait until the pipeline is idle again (a probe answers within `quick_ms`), so a phase
    never measures the backlog its predecessor left (e.g. requests the gateway gave up on)."""
    started = time.perf_counter()
    async with SluiceClient(settings=settings, timeout_s=limit_s) as client:
        while time.perf_counter() - started < limit_s:
            sent = time.perf_counter()
            await client.request("drain probe", max_tokens=4)
            if (time.perf_counter() - sent) * 1000 < quick_ms:
                break
            await asyncio.sleep(1.0)
    return round(time.perf_counter() - started, 1)


def compare(settings: Settings, url: str, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """Alternating kafka / http phases at one rate; percentiles over all phases of each path."""
    # Warm-up, discarded: connections, consumer positions, caches on both paths.
    asyncio.run(kafka_path(settings, rate, args.warmup))
    asyncio.run(http_path(url, rate, args.warmup))
    rounds: list[dict[str, Any]] = []
    kafka_all: list[float] = []
    http_all: list[float] = []
    for round_no in range(args.rounds):
        asyncio.run(drain(settings))
        kafka, kafka_failed = asyncio.run(kafka_path(settings, rate, args.duration))
        asyncio.run(drain(settings))
        http, http_failed = asyncio.run(http_path(url, rate, args.duration))
        kafka_all += kafka
        http_all += http
        rounds.append(
            {
                "kafka": summary(kafka) | {"failed": kafka_failed},
                "http": summary(http) | {"failed": http_failed},
            }
        )
        print(f"{rate:g} req/s round {round_no + 1}: kafka {rounds[-1]['kafka']}  http {rounds[-1]['http']}")
    kafka_summary, http_summary = summary(kafka_all), summary(http_all)
    return {
        "rate": rate,
        "duration_s_per_phase": args.duration,
        "kafka_client_ms": kafka_summary,
        "http_gateway_ms": http_summary,
        "http_overhead_ms": {q: round(http_summary[q] - kafka_summary[q], 1) for q in ("p50", "p90", "p99")},
        "ratio_http_to_kafka": {
            q: round(http_summary[q] / kafka_summary[q], 2) if kafka_summary[q] else None
            for q in ("p50", "p90", "p99")
        },
        "rounds": rounds,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    broker = start_broker()
    home = Path(f"/tmp/sluice-bench-http-{uuid.uuid4().hex[:6]}")
    settings = Settings(
        home=home,
        kafka_bootstrap=broker.bootstrap,
        simulator_port=free_port(),
        simulator_seed=1,
        simulator_latency_ms=args.model_latency_ms,
        simulator_latency_jitter_ms=0,
        broker_session_timeout_s=3,
        broker_rebalance_timeout_s=3,
        broker_heartbeat_interval_s=0.5,
        http_port=free_port(),
        # --quota: the demo tenant gets limits it never reaches, so every request pays the admit
        # step (one more Kafka hop, table writes, a settlement) without being refused.
        tenants={"demo": TenantConfig(quota=QuotaRules(requests_per_minute=10**9, daily_budget_usd=1e9))}
        if args.quota
        else {},
    )
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = settings.http_port

    processes = [
        start_process(settings, logs, "simulator"),
        worker := start_process(settings, logs, "worker"),
        start_process(settings, logs, "gateway"),  # `sluice gateway`, as deployed
    ]
    try:
        wait_pipeline_ready(settings, worker)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(url + "/healthz").status_code == 200, "gateway")
        return {"by_rate": [compare(settings, url, rate, args) for rate in args.rate]}
    finally:
        stop_processes(processes)
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--rate", type=float, nargs="+", default=[100.0], help="one or more rates (lowest first is kinder)"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="kafka+http phase pairs")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds per path, discarded")
    parser.add_argument("--model-latency-ms", type=float, default=0.0)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke check")
    parser.add_argument("--note", default="", help="free text stored with the results (machine load)")
    parser.add_argument("--quota", action="store_true", help="demo tenant with (unreachable) limits")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 5.0, 1
    from sluice.worker import install_fast_event_loop

    install_fast_event_loop()  # the same event loop as the gateway process: a fair comparison
    load = os.getloadavg()
    measured = run(args)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1_5_15_at_start": [round(x, 2) for x in load],
            "loadavg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "note": args.note,
        "model_latency_ms": args.model_latency_ms,
        "tenant_has_quota": args.quota,
        **measured,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "front_door-quota" if args.quota else "front_door"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = [
        f"HTTP front door vs Kafka client ({result['when']}), model latency {args.model_latency_ms:g} ms, "
        f"{'demo tenant WITH quota limits (admit step on)' if args.quota else 'demo tenant without quotas'}"
    ]
    for case in measured["by_rate"]:
        text += [
            f"at {case['rate']:g} req/s:",
            f"  kafka client  ms: {case['kafka_client_ms']}",
            f"  http gateway  ms: {case['http_gateway_ms']}",
            f"  overhead (http - kafka) ms: {case['http_overhead_ms']}",
            f"  ratio http/kafka: {case['ratio_http_to_kafka']}",
        ]
    text += [
        f"load average at start/end: {result['machine']['loadavg_1_5_15_at_start']} / "
        f"{result['machine']['loadavg_1_5_15_at_end']}",
        f"note: {args.note}",
    ]
    (RESULTS / f"{name}.txt").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    print(f"\nwrote {RESULTS / name}.json and .txt")


if __name__ == "__main__":
    main()
