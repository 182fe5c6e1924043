"""Does the ClickHouse sink's CPU show in the answers' tail? (run by hand)

    .venv/bin/python bench/sink_priority.py [--rate 40] [--duration 25] [--pairs 3]

Runs the whole pipeline on embedded defaults (broker, worker, sink, gateway, zero-latency model
simulator) and drives the HTTP front door open-loop at `--rate`, latency counted from each
request's scheduled send time. It alternates two sink configurations, a fresh stack per run so
neither inherits the other's state: the defaults (an insert every 2 s, at niceness 10) and the
earlier ones (every 0.5 s, same priority as the request path). Alternating pairs keep a drift
in the machine's load from reading as a difference. Writes bench/results/sink_priority.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import start_http_stack, stop_processes, zero_latency_settings
from openloop import Pool, chat_request, run_step

from sluice.edge.load import percentile
from sluice.local.broker import start_broker

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults: insert every 2 s, niceness 10": {},
    "earlier: insert every 0.5 s, niceness 0": {"sink_batch_seconds": 0.5, "sink_niceness": 0},
}
TIMEOUT_S = 10.0


def payloads(port: int, count: int, tag: str) -> list[bytes]:
    return [
        chat_request(
            "127.0.0.1",
            port,
            {"model": "auto", "messages": [{"role": "user", "content": f"{tag} {i}: what is a log?"}]},
            None,
        )
        for i in range(count)
    ]


def one_run(overrides: dict[str, Any], rate: float, duration: float) -> dict[str, Any]:
    """A fresh stack with these sink settings; a short warm-up, then one open-loop step."""
    home = Path(f"/tmp/sluice-sink-priority-{uuid.uuid4().hex[:6]}")
    logs = home / "logs"
    broker = start_broker(log_path=logs / "tansu.log")
    settings = zero_latency_settings(home, broker.bootstrap, **overrides)
    try:
        processes = list(start_http_stack(settings, logs).values())
    except BaseException:
        broker.stop()
        raise
    try:

        async def drive() -> Any:
            pool = Pool("127.0.0.1", settings.http_port)
            try:
                await run_step(pool, payloads(settings.http_port, 30, "warm"), 10, TIMEOUT_S, 3)
                await asyncio.sleep(2)
                measured = payloads(settings.http_port, int(rate * duration), "m")
                return await run_step(pool, measured, rate, TIMEOUT_S, duration)
            finally:
                pool.close()

        load = os.getloadavg()[0]
        step = asyncio.run(drive())
    finally:
        stop_processes(processes)
        broker.stop()
    latencies = sorted(step.latencies_ms)
    return {
        "sent": step.sent,
        "ok": step.ok,
        "errors": step.errors,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "loadavg_1min_at_start": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=40.0, help="offered requests per second")
    parser.add_argument("--duration", type=float, default=25.0, help="seconds per run")
    parser.add_argument("--pairs", type=int, default=3, help="alternating runs of each configuration")
    args = parser.parse_args()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    for pair in range(args.pairs):
        for name, overrides in CONFIGS.items():
            result = one_run(overrides, args.rate, args.duration)
            runs[name].append(result)
            print(f"pair {pair + 1} {name}: {result}", flush=True)
    summary = {
        name: {
            "p99_ms_median": statistics.median(r["p99_ms"] for r in results),
            "p50_ms_median": statistics.median(r["p50_ms"] for r in results),
            "ok": sum(r["ok"] for r in results),
            "sent": sum(r["sent"] for r in results),
        }
        for name, results in runs.items()
    }
    document = {
        "when": started,
        "machine": {"cpus": os.cpu_count(), "loadavg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()]},
        "settings": {
            "rate_rps": args.rate,
            "duration_s": args.duration,
            "pairs": args.pairs,
            "configs": CONFIGS,
        },
        "runs": runs,
        "summary": summary,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sink_priority.json").write_text(json.dumps(document, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
