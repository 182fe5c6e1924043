"""Fuzz run (by hand): 10,000 random and mutated inputs into a real Sluice - 5,000 through the
HTTP front door, 5,000 straight onto the requests topic - on the embedded broker with one worker,
the ClickHouse sink and the model simulator. Counts what answered each input (HTTP status;
Kafka response status/error code or dead-letter record) and how many got none or two, and
whether any process crashed. Generator and checks: tests/e2e/fuzz.py (CI runs 200 each way).

    .venv/bin/python bench/fuzz.py [--per-way 5000] [--seed 2026]

Writes bench/results/fuzz.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import start_process, wait_pipeline_ready, wait_until  # noqa: E402

from sluice.edge.gateway import serve_gateway  # noqa: E402
from sluice.local.broker import free_port, start_broker  # noqa: E402
from sluice.settings import Settings  # noqa: E402
from sluice.tenants import AccessRules, TenantConfig, hash_key  # noqa: E402
from sluice.warehouse.queries import running_sink_url  # noqa: E402
from tests.e2e.fuzz import FuzzReport, fuzz_http, fuzz_kafka  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fuzz.json"
KEY = "sk-sluice-fuzz-bench-key"


async def run(settings: Settings, per_way: int, seed: int) -> FuzzReport:
    report = FuzzReport()
    started = time.monotonic()
    port = free_port()
    async with serve_gateway(settings, "127.0.0.1", port):
        await fuzz_http(f"http://127.0.0.1:{port}", per_way, seed, [KEY, "sk-sluice-unknown"], report)
        async with httpx.AsyncClient() as http:
            healthy = (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    tenants: dict[str, str | None] = {"acme": KEY, "demo": None, "nobody": None}
    await fuzz_kafka(settings, per_way, seed, tenants, report, rate=200.0, timeout_s=300.0)
    report.seconds = time.monotonic() - started
    if not healthy:
        report.http_error_kinds["gateway unhealthy after the HTTP fuzz"] += 1
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-way", type=int, default=5000, help="inputs per way in (HTTP, Kafka)")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    broker = start_broker()
    home = Path(f"/tmp/sluice-bench-fuzz-{uuid.uuid4().hex[:6]}")
    tenants = {
        "acme": TenantConfig(access=AccessRules(api_key_sha256=(hash_key(KEY),))),
        "demo": TenantConfig(),
    }
    settings = Settings(
        home=home,
        kafka_bootstrap=broker.bootstrap,
        simulator_port=free_port(),
        simulator_seed=args.seed,
        simulator_latency_ms=5,
        simulator_latency_jitter_ms=2,
        broker_session_timeout_s=3,
        broker_rebalance_timeout_s=3,
        broker_heartbeat_interval_s=0.5,
        tenants=tenants,
    )
    logs = home / "logs"
    processes = {name: start_process(settings, logs, name) for name in ("simulator", "sink", "worker")}
    load_before = os.getloadavg()
    try:
        wait_pipeline_ready(settings, processes["worker"])
        wait_until(lambda: running_sink_url(settings) is not None, "sink")
        report = asyncio.run(run(settings, args.per_way, args.seed))
        crashed = {
            name: process.returncode for name, process in processes.items() if process.poll() is not None
        }
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(30)
        broker.stop()
    summary = report.summary()
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "settings": {
            "per_way": args.per_way,
            "seed": args.seed,
            "kafka_rate_per_s": 200.0,
            "http_concurrency": 16,
        },
        "process_crashes": len(crashed),
        "crashed": crashed,
        **summary,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    lost = summary["lost"]
    print(f"\n{summary['inputs']} inputs, {len(crashed)} process crashes, {lost} without exactly one answer")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
