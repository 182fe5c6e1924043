"""CPU of the worker's model call, by HTTP transport (run by hand).

Starts Sluice's model simulator with no latency, then makes the same chat-completion calls
through `ChatClient` (what the infer stage uses) over two transports, in alternating rounds:
httpx's own (httpcore over anyio) and `PooledTransport` (httpx over aiohttp's pool, the
default). Reported: this process's CPU per call (client side only; the simulator runs in a
process of its own) at each number of calls in flight, and the ratio.

    .venv/bin/python bench/model_transport.py [--calls 2000] [--rounds 3] [--in-flight 1 16 64]

Writes bench/results/model_transport.json with the effective settings, machine load and date.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import httpx
from harness import start_process, stop_processes, wait_until, zero_latency_settings

from sluice.local.broker import free_port
from sluice.providers.catalog import load_catalog
from sluice.providers.openai_http import ChatClient
from sluice.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
PAYLOAD = {"messages": [{"role": "user", "content": "Summarise the quarterly report in two lines. " * 8}]}


async def cpu_per_call(settings: Settings, transport: str, calls: int, in_flight: int) -> float:
    """Milliseconds of this process's CPU per successful call."""
    chosen = (
        httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=in_flight))
        if transport == "httpx"
        else None
    )
    client = ChatClient(settings.with_overrides(infer_max_in_flight=max(in_flight, 1)), transport=chosen)
    entry = load_catalog(settings).get("sim-small")
    assert entry is not None
    slots = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with slots:
            completion = await client.complete(entry, PAYLOAD, 30.0)
            assert completion.content

    try:
        await asyncio.gather(*[one() for _ in range(min(200, calls))])  # connections, caches
        started = time.process_time()
        await asyncio.gather(*[one() for _ in range(calls)])
        return (time.process_time() - started) * 1000 / calls
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per transport")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as home:
        settings = zero_latency_settings(Path(home), "127.0.0.1:1", simulator_port=free_port())
        simulator = start_process(settings, Path(home) / "logs", "simulator")
        try:
            root = settings.simulator_url.removesuffix("/v1")
            wait_until(lambda: _answers(root), "simulator ready", 30)
            measured: dict[str, dict[str, list[float]]] = {}
            for in_flight in args.in_flight:
                runs: dict[str, list[float]] = {"httpx": [], "pooled": []}
                for _ in range(args.rounds):
                    for transport in ("httpx", "pooled"):
                        ms = asyncio.run(cpu_per_call(settings, transport, args.calls, in_flight))
                        runs[transport].append(round(ms, 4))
                measured[str(in_flight)] = runs
        finally:
            stop_processes([simulator])
    summary = {
        in_flight: {
            "httpx_ms": median(runs["httpx"]),
            "pooled_ms": median(runs["pooled"]),
            "pooled_to_httpx": round(median(runs["pooled"]) / median(runs["httpx"]), 3),
        }
        for in_flight, runs in measured.items()
    }
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1_5_15_at_start": [round(x, 2) for x in load_start],
            "loadavg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {"calls": args.calls, "rounds": args.rounds, "in_flight": args.in_flight},
        "cpu_ms_per_call_median": summary,
        "cpu_ms_per_call_runs": measured,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "model_transport.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def _answers(root: str) -> bool:
    try:
        return httpx.get(f"{root}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
