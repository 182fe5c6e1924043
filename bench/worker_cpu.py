"""Worker CPU cost per request (run by hand): where a worker's time goes, independent of how
busy the rest of the machine is.

Throughput on this 2-core machine is bounded by the worker's CPU time per request (one Python
process, one core). Wall-clock benchmarks swing with whatever else runs; CPU seconds per
answered request do not, so this is the figure to optimise against. Optionally samples the
worker with py-spy (if installed) and prints the heaviest frames.

    .venv/bin/python bench/worker_cpu.py [--rate 100] [--duration 20] [--profile]

Writes bench/results/worker_cpu.json (and worker_cpu.folded with --profile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from harness import cpu_seconds, start_process, wait_pipeline_ready

from sluice.edge.client import SluiceClient
from sluice.edge.load import run_load
from sluice.local.broker import free_port, start_broker
from sluice.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"


def top_frames(folded: Path, limit: int = 25) -> list[tuple[str, float]]:
    """Share of samples in which each function appears anywhere on the stack (inclusive)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        for frame in set(stack.split(";")):
            inclusive[frame] += count
    return [(frame, count / total) for frame, count in inclusive.most_common(limit)] if total else []


async def load(settings: Settings, rate: float, duration: float) -> dict[str, Any]:
    async with SluiceClient(settings=settings, timeout_s=120) as client:
        for _ in range(20):
            await client.request("warm up")

        def make(i: int) -> dict[str, Any]:
            return {"messages": f"benchmark question {i}", "max_tokens": 32}

        report = await run_load(client, rate, duration, make_request=make, settle_s=60)
    return report.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--fetch-wait-ms", type=int, default=None, help="override the consumer long-poll")
    parser.add_argument("--profile", action="store_true", help="sample the worker with py-spy")
    args = parser.parse_args()

    broker = start_broker()
    home = Path(f"/tmp/sluice-cpu-{uuid.uuid4().hex[:6]}")
    settings = Settings(
        home=home,
        kafka_bootstrap=broker.bootstrap,
        simulator_port=free_port(),
        simulator_seed=1,
        simulator_latency_ms=0,
        simulator_latency_jitter_ms=0,
        **({} if args.fetch_wait_ms is None else {"consumer_fetch_wait_ms": args.fetch_wait_ms}),
    )
    logs = home / "logs"
    children = [start_process(settings, logs, role) for role in ("simulator", "worker")]
    worker = children[1]
    spy: subprocess.Popen[bytes] | None = None
    folded = RESULTS / "worker_cpu.folded"
    try:
        wait_pipeline_ready(settings, worker)
        asyncio.run(load(settings, 20, 2))  # warm every stage before measuring
        if args.profile and shutil.which("py-spy"):
            spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(worker.pid), "--format", "raw", "--rate", "200",
                 "--output", str(folded), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)
        pids = {"worker": worker.pid, "broker": broker.process.pid, "simulator": children[0].pid}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        load_before = time.process_time()
        summary = asyncio.run(load(settings, args.rate, args.duration))
        others = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        others["load generator"] = time.process_time() - load_before
        used = others["worker"]
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        for process in children:
            process.terminate()
            process.wait(20)
        broker.stop()
    per_request_ms = used * 1000 / max(summary["answered"], 1)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rate": args.rate,
        "duration_s": args.duration,
        "load": summary,
        "worker_cpu_s": round(used, 3),
        "worker_cpu_ms_per_request": round(per_request_ms, 3),
        "implied_max_rps_one_core": round(1000 / per_request_ms, 1),
        "cpu_ms_per_request_by_process": {
            name: round(seconds * 1000 / max(summary["answered"], 1), 3) for name, seconds in others.items()
        },
        "fetch_wait_ms": settings.consumer_fetch_wait_ms,
    }
    print(json.dumps(result, indent=2))
    if spy is not None and folded.exists():
        print("\nheaviest frames (inclusive share of samples):")
        for frame, share in top_frames(folded):
            print(f"{share:6.1%}  {frame[:150]}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "worker_cpu.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
