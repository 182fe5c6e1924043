"""Streaming benchmark (run by hand): time to the first chunk through the whole pipeline, with
the official OpenAI wire format over the HTTP gateway, at a steady open-loop rate.

The simulated model takes 200 ms to its first token and 20 ms per token after it, for 50
tokens (max_tokens 50). Everything real: Tansu broker, one worker, the simulator over HTTP and
the gateway in its own process. For each request: time from its *scheduled* send time to the
first SSE chunk with text, and to the end of the stream; the streamed text is compared with the
non-streamed answer to the same prompt (the simulator's text is a function of the prompt).
Run once per stream-check mode: `windowed:N` holds back N whole sentences (0 = only the
unfinished word), `asynchronous` holds nothing back and checks each word right after release.

    .venv/bin/python bench/streaming.py [--rate 20] [--duration 15]
        [--modes windowed:1 windowed:0 asynchronous]

Writes bench/results/streaming.json (its README row: `bench/readme_tables.py`).
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
import orjson
from harness import start_process, stop_processes, wait_pipeline_ready, wait_until

from sluice.edge.load import percentile
from sluice.local.broker import free_port, start_broker
from sluice.settings import Settings
from sluice.tenants import TenantConfig

RESULTS = Path(__file__).resolve().parent / "results"
FIRST_TOKEN_MS, TOKEN_MS, TOKENS = 200.0, 20.0, 50
MODEL = "sim-small"


async def one_stream(http: aiohttp.ClientSession, prompt: str, scheduled: float) -> dict[str, Any]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": TOKENS,
        "stream": True,
    }
    first: float | None = None
    text: list[str] = []
    finish = None
    async with http.post("/v1/chat/completions", json=body) as reply:
        if reply.status != 200:
            await reply.read()
            return {"ok": False, "status": reply.status}
        async for raw in reply.content:
            line = raw.decode().strip()
            if not line.startswith("data: {"):
                continue
            event = orjson.loads(line[6:])
            for choice in event.get("choices") or []:
                piece = choice["delta"].get("content")
                if piece:
                    first = first or time.perf_counter()
                    text.append(piece)
                finish = choice.get("finish_reason") or finish
    done = time.perf_counter()
    return {
        "ok": first is not None,
        "first_ms": ((first or done) - scheduled) * 1000,
        "total_ms": (done - scheduled) * 1000,
        "text": "".join(text),
        "finish": finish,
    }


async def whole(http: aiohttp.ClientSession, prompt: str) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": TOKENS}
    async with http.post("/v1/chat/completions", json=body) as reply:
        data = await reply.json()
    return str(data["choices"][0]["message"]["content"])


async def load(url: str, rate: float, duration: float, tag: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(base_url=url, connector=aiohttp.TCPConnector(limit=0)) as http:
        await one_stream(http, "warm up", time.perf_counter())
        start = time.perf_counter()
        tasks = []
        for i in range(int(rate * duration)):
            scheduled = start + i / rate
            if (delay := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one_stream(http, f"{tag} streaming question {i}", scheduled)))
        results = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        sample = list(range(0, len(results), max(1, len(results) // 20)))
        same = [await whole(http, f"{tag} streaming question {i}") == results[i].get("text") for i in sample]
    ok = [r for r in results if r["ok"]]
    firsts, totals = [r["first_ms"] for r in ok], [r["total_ms"] for r in ok]
    return {
        "requests": len(results),
        "answered": len(ok),
        "goodput_per_s": round(len(ok) / elapsed, 2),
        "first_chunk_ms": {f"p{q}": round(percentile(firsts, q), 1) for q in (50, 90, 99)},
        "full_stream_ms": {f"p{q}": round(percentile(totals, q), 1) for q in (50, 90, 99)},
        "chunks_text_equals_whole_text": f"{sum(same)}/{len(same)}",
        "finish_reasons": sorted({str(r.get("finish")) for r in ok}),
    }


def run(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    checks, _, window_text = mode.partition(":")
    window = int(window_text or 0)
    broker = start_broker()
    home = Path(f"/tmp/sluice-bench-stream-{uuid.uuid4().hex[:6]}")
    settings = Settings(
        home=home,
        kafka_bootstrap=broker.bootstrap,
        simulator_port=free_port(),
        simulator_seed=1,
        simulator_latency_ms=FIRST_TOKEN_MS,
        simulator_latency_jitter_ms=0,
        simulator_token_ms=TOKEN_MS,
        broker_session_timeout_s=3,
        broker_rebalance_timeout_s=3,
        broker_heartbeat_interval_s=0.5,
        http_port=free_port(),
        tenants={"demo": TenantConfig(output={"stream_checks": checks, "stream_window_sentences": window})},  # type: ignore[arg-type]
    )
    logs = home / "logs"
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
        measured = asyncio.run(load(url, args.rate, args.duration, f"{checks}{window}"))
        return {"stream_checks": checks, "stream_window_sentences": window} | measured
    finally:
        stop_processes(processes)
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--modes", nargs="+", default=["windowed:1", "windowed:0", "asynchronous"])
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    started_load = os.getloadavg()
    runs = []
    for mode in args.modes:
        runs.append(run(mode, args))
        print(json.dumps(runs[-1]))
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1_5_15_at_start": [round(x, 2) for x in started_load],
            "loadavg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {
            "rate_per_s": args.rate,
            "duration_s": args.duration,
            "open_loop": True,
            "latency_from": "scheduled send time",
            "simulator_first_token_ms": FIRST_TOKEN_MS,
            "simulator_token_ms": TOKEN_MS,
            "max_tokens": TOKENS,
            "target_first_chunk_p50_ms": FIRST_TOKEN_MS + 50,
        },
        "note": args.note,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "streaming.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'streaming.json'}")


if __name__ == "__main__":
    main()
