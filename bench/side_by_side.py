"""Sluice and the LiteLLM proxy side by side, in one run, on this box (run by hand).

    .venv/bin/python bench/side_by_side.py [--rates 20 40 80 ...] [--duration 15] [--quick]

Starts one zero-latency OpenAI-compatible mock upstream (Sluice's simulator, latency 0) and the
LiteLLM proxy with 2 workers against it. Each Sluice step then starts Sluice on embedded defaults
(the embedded broker, one worker, the ClickHouse sink, the HTTP front door) against that same
mock, afresh: the embedded broker's CPU per answer grows with every record earlier steps stored
(see `sluice_stack` and bench/broker_growth.py), which Apache Kafka's does not. One open-loop generator
(bench/openloop.py: latency from each request's scheduled send time) drives each system in turn
at each offered rate; the Kafka client path (SluiceClient) is driven at the same rates.

Reported per system and rate: goodput (successful answers per second), p50/p95/p99, errors, and
the CPU per successful request of every process (broker, worker, gateway, sink, mock, LiteLLM,
generator). *Sustained* means achieved >= 98% of offered, < 1% errors and p99 <= 1 s. Sluice runs
with every check on and every event into ClickHouse; the run ends by checking that ClickHouse
holds one request row per answer.

LiteLLM lives in a benchmark-only virtualenv (`.bench/litellm`, created on first use, about two
minutes), never in Sluice's dependencies. Results: bench/results/side_by_side.json (+ .txt).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from harness import (
    cpu_seconds,
    machine,
    start_http_stack,
    start_process,
    stop_processes,
    wait_until,
    zero_latency_settings,
)
from openloop import Pool, Step, chat_request, run_step

from sluice.edge.client import SluiceClient, SluiceTimeout
from sluice.edge.load import percentile
from sluice.local.broker import free_port, start_broker
from sluice.settings import Settings
from sluice.warehouse.queries import running_sink_url

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
LITELLM_VENV = ROOT.parent / ".bench" / "litellm"
MASTER_KEY = "sk-bench-master"
MODEL = "sim-small"
MAX_TOKENS = 32
TIMEOUT_S = 10.0
SUSTAINED = {"achieved_share": 0.98, "error_share": 0.01, "p99_ms": 1000.0}


# --- processes --------------------------------------------------------------------------------


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its descendants (LiteLLM forks its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += cpu_seconds(current)
        except (OSError, IndexError):
            continue
        stack.extend(children.get(current, []))
    return total


def ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        print("creating the LiteLLM benchmark venv (.bench/litellm) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]", "aiohttp", "uvloop"]
        subprocess.run(pip, check=True)
    return binary


def litellm_config(mock_url: str) -> str:
    return json.dumps(
        {
            "model_list": [
                {
                    "model_name": MODEL,
                    "litellm_params": {
                        "model": f"openai/{MODEL}",
                        "api_base": mock_url,
                        "api_key": "sk-mock",
                    },
                }
            ],
            "litellm_settings": {"telemetry": False, "num_retries": 0, "callbacks": []},
            "general_settings": {
                "master_key": MASTER_KEY,
                "disable_spend_logs": True,
                "background_health_checks": False,
            },
        }
    )


@contextmanager
def litellm_proxy(mock_url: str, logs: Path, workers: int) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    binary = ensure_litellm()
    config = logs / "litellm.yaml"
    config.write_text(litellm_config(mock_url))  # JSON is YAML
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_"))}
    env.update(
        LITELLM_MASTER_KEY=MASTER_KEY,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        LITELLM_MODE="PRODUCTION",
        DISABLE_ADMIN_UI="True",
    )
    command = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--num_workers", str(workers)]
    process = subprocess.Popen(
        command, env=env, stdout=(logs / "litellm.log").open("wb"), stderr=subprocess.STDOUT
    )
    try:
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/health/liveliness").status_code == 200,
            "litellm",
            timeout=420,  # its supervisor restarts workers that start slowly on a busy box
        )
        yield port, process
    finally:
        stop_processes([process])


def wait_idle(pids: dict[str, int], quiet_share: float = 0.1, limit_s: float = 90.0) -> None:
    """Until the processes use less than `quiet_share` of a core together (LiteLLM's workers
    keep starting up for 30-60 s after they answer their health check)."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        before = sum(tree_cpu(pid) for pid in pids.values())
        time.sleep(2.0)
        if (sum(tree_cpu(pid) for pid in pids.values()) - before) / 2.0 < quiet_share:
            return


# --- measuring ----------------------------------------------------------------------------------


def summarise(step: Step, cpu: dict[str, float]) -> dict[str, Any]:
    # Per second of offered load; p99 <= 1 s in `sustained` keeps a backlog from hiding here.
    goodput = step.ok / step.duration_s
    errors = sum(step.errors.values())
    p = {f"p{q}": round(percentile(step.latencies_ms, q), 1) for q in (50, 95, 99)}
    sustained = (
        goodput >= SUSTAINED["achieved_share"] * step.offered_rps
        and errors < SUSTAINED["error_share"] * step.sent
        and p["p99"] <= SUSTAINED["p99_ms"]
    )
    return {
        "offered_rps": step.offered_rps,
        "sent": step.sent,
        "ok": step.ok,
        "goodput_rps": round(goodput, 1),
        "errors": dict(step.errors),
        "latency_ms": p,
        "sustained": sustained,
        "cpu_ms_per_ok": {name: round(seconds * 1000 / max(step.ok, 1), 2) for name, seconds in cpu.items()},
        "cpu_cores": {name: round(seconds / step.elapsed_s, 3) for name, seconds in cpu.items()},
    }


def measured(pids: dict[str, int], run: Callable[[], Step]) -> dict[str, Any]:
    """Run one step; CPU of every process (and this generator) over it."""
    before = {name: tree_cpu(pid) for name, pid in pids.items()}
    own_before = time.process_time()
    step = run()
    cpu = {name: tree_cpu(pid) - before[name] for name, pid in pids.items()}
    cpu["generator"] = time.process_time() - own_before
    return summarise(step, cpu)


def http_step(port: int, api_key: str | None, model: str, rate: float, duration: float, tag: str) -> Step:
    total = max(1, int(rate * duration))
    payloads = [
        chat_request(
            "127.0.0.1",
            port,
            {
                "model": model,
                "messages": [{"role": "user", "content": f"side by side question {tag} {i}: what is a log?"}],
                "max_tokens": MAX_TOKENS,
            },
            api_key,
        )
        for i in range(total)
    ]

    async def go() -> Step:
        pool = Pool("127.0.0.1", port)
        try:
            return await run_step(pool, payloads, rate, TIMEOUT_S, duration)
        finally:
            pool.close()

    return asyncio.run(go())


def litellm_step(port: int, pids: dict[str, int], rate: float, duration: float) -> dict[str, Any]:
    """One measured step through the LiteLLM proxy, once its workers are idle again."""
    wait_idle(pids, limit_s=30)
    return measured(pids, lambda: http_step(port, MASTER_KEY, MODEL, rate, duration, f"r{rate:g}"))


def kafka_step(settings: Settings, rate: float, duration: float, tag: str) -> Step:
    step = Step(offered_rps=rate, duration_s=duration)

    async def go() -> None:
        async with SluiceClient(settings=settings, timeout_s=TIMEOUT_S) as client:
            start = time.perf_counter() + 0.05
            last = start

            async def one(i: int, scheduled: float) -> None:
                nonlocal last
                try:
                    response = await client.request(
                        f"side by side question {tag} {i}: what is a log?", max_tokens=MAX_TOKENS
                    )
                except SluiceTimeout:
                    step.count_error("timeout")
                    return
                now = time.perf_counter()
                last = max(last, now)
                if response.status.value == "ok":
                    step.ok += 1
                    step.latencies_ms.append((now - scheduled) * 1000)
                else:
                    step.count_error(response.error.code.value if response.error else response.status.value)

            tasks = []
            for i in range(max(1, int(rate * duration))):
                scheduled = start + i / rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i, scheduled)))
                step.sent += 1
            await asyncio.gather(*tasks)
            step.elapsed_s = max(last - start, duration)

    asyncio.run(go())
    return step


def requests_in_clickhouse(settings: Settings) -> int | None:
    url = running_sink_url(settings)
    if url is None:
        return None
    rows = httpx.get(f"{url}/query/totals", params={"minutes": 600}, timeout=30).json()["rows"]
    return sum(int(row["requests"]) for row in rows)


# --- the run ------------------------------------------------------------------------------------


@contextmanager
def sluice_stack(base: Settings, tag: str) -> Iterator[tuple[Settings, dict[str, int]]]:
    """A fresh embedded broker with Sluice's sink, worker and gateway, on the shared mock.

    Fresh for every step: the embedded broker keeps every record in memory and, to serve a fetch,
    reads through the list of every batch stored in the partition, so its CPU per answer grows
    with all that earlier steps left (bench/broker_growth.py measures it). Apache Kafka finds an
    offset through its index, so a production broker carries no such cost; restarting keeps one
    step's leftovers out of the next step's figures."""
    home = base.home / tag
    logs = home / "logs"
    broker = start_broker(log_path=logs / "tansu.log")
    settings = zero_latency_settings(
        home,
        broker.bootstrap,
        chain_breaks=base.chain_breaks,
        simulator_port=base.simulator_port,
    )
    try:
        processes = start_http_stack(settings, logs, with_simulator=False)
    except BaseException:
        broker.stop()
        raise
    try:
        pids = {"broker": broker.process.pid} | {name: process.pid for name, process in processes.items()}
        yield settings, pids
    finally:
        stop_processes(list(processes.values()))
        broker.stop()


def sluice_step(
    base: Settings, mock_pid: int, system: str, rate: float, duration: float
) -> tuple[dict[str, Any], int, int | None]:
    """One step through a fresh stack: warm-up (discarded), the measured step, then the count of
    request rows ClickHouse holds against the requests sent (warm-up included)."""
    tag = f"{system}-{rate:g}"
    with sluice_stack(base, tag) as (settings, pids):
        pids = pids | {"mock": mock_pid}

        def one(rate: float, seconds: float, label: str) -> Step:
            if system == "sluice_http":
                return http_step(settings.http_port, None, "auto", rate, seconds, label)
            return kafka_step(settings, rate, seconds, label)

        warm = one(10, 2, f"warm-{tag}")  # connections, imports, caches on every path
        wait_idle(pids, limit_s=30)
        step = measured(pids, lambda: one(rate, duration, tag))
        sent = warm.sent + step["sent"]
        # The sink's last batch lands within one batch interval and one fetch wait; poll for it
        # rather than sleeping a guess, and report what is there when the deadline passes.
        deadline = time.time() + settings.sink_batch_seconds + settings.sink_fetch_wait_ms / 1000 + 10
        stored = requests_in_clickhouse(settings)
        while (stored is None or stored < sent) and time.time() < deadline:
            time.sleep(0.5)
            stored = requests_in_clickhouse(settings)
        return step, sent, stored


def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(f"/tmp/sluice-side-by-side-{uuid.uuid4().hex[:6]}")
    logs = home / "logs"
    logs.mkdir(parents=True)
    # The shared mock's settings; each step's stack gets its own broker (sluice_stack), so this
    # bootstrap address is never dialled.
    base = zero_latency_settings(home, "127.0.0.1:9", chain_breaks=args.chain_breaks)
    mock = start_process(base, logs, "simulator")
    health = base.simulator_url.removesuffix("/v1") + "/healthz"
    try:
        wait_until(lambda: httpx.get(health).status_code == 200, "mock")
        with ExitStack() as exits:
            litellm_pids: dict[str, int] = {}
            litellm_port = 0
            if not args.without_litellm:
                litellm_port, litellm = exits.enter_context(
                    litellm_proxy(base.simulator_url, logs, args.litellm_workers)
                )
                litellm_pids = {"litellm": litellm.pid, "mock": mock.pid}
                wait_idle(litellm_pids)
                http_step(litellm_port, MASTER_KEY, MODEL, 10, 2, "warm")  # discarded

            by_rate: list[dict[str, Any]] = []
            sent_total, stored_total = 0, 0
            stopped: set[str] = set() if litellm_pids else {"litellm"}
            for rate in args.rates:
                row: dict[str, Any] = {"offered_rps": rate}
                for system in ("litellm", "sluice_http", "sluice_kafka"):
                    if system in stopped:
                        continue
                    if system == "litellm":
                        row[system] = litellm_step(litellm_port, litellm_pids, rate, args.duration)
                    else:
                        step, sent, stored = sluice_step(base, mock.pid, system, rate, args.duration)
                        row[system] = step | {"clickhouse_requests": stored, "requests_sent": sent}
                        sent_total += sent
                        stored_total += stored or 0
                    print(f"{rate:>6g} req/s {system:13s} {row[system]}", flush=True)
                    if not row[system]["sustained"] and rate >= args.stop_after_miss_from:
                        stopped.add(system)  # one more rate would only measure a backlog
                by_rate.append(row)
                if stopped >= {"litellm", "sluice_http", "sluice_kafka"}:
                    break
        return {
            "by_rate": by_rate,
            "clickhouse_requests": stored_total,
            "sluice_requests_sent": sent_total,
            "settings": {
                "chain_breaks": base.chain_breaks,
                "consumer_fetch_wait_ms": base.consumer_fetch_wait_ms,
                "client_fetch_wait_ms": base.client_fetch_wait_ms,
                "producer_linger_ms": base.producer_linger_ms,
                "sink_batch_seconds": base.sink_batch_seconds,
                "sink_fetch_wait_ms": base.sink_fetch_wait_ms,
                "sluice_stack": "fresh embedded broker and processes for every step, one shared mock",
                "litellm_workers": args.litellm_workers,
                "duration_s_per_step": args.duration,
                "timeout_s": TIMEOUT_S,
                "max_tokens": MAX_TOKENS,
                "sustained_means": SUSTAINED,
            },
        }
    finally:
        stop_processes([mock])


def best_sustained(by_rate: list[dict[str, Any]], system: str) -> float:
    return max(
        (row[system]["goodput_rps"] for row in by_rate if system in row and row[system]["sustained"]),
        default=0.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[20, 40, 60, 80, 100, 120, 160, 200, 240, 280, 320, 360, 400],
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per step")
    parser.add_argument("--litellm-workers", type=int, default=2)
    parser.add_argument("--chain-breaks", default="", help="Sluice's layout (SLUICE_CHAIN_BREAKS)")
    parser.add_argument(
        "--stop-after-miss-from",
        type=float,
        default=60,
        help="stop a system at its first miss from this rate",
    )
    parser.add_argument("--without-litellm", action="store_true", help="Sluice alone (quicker, no ratios)")
    parser.add_argument("--quick", action="store_true", help="short steps at two rates, for a smoke check")
    parser.add_argument("--note", default="", help="free text stored with the results")
    args = parser.parse_args()
    if args.quick:
        args.rates, args.duration = [20, 40], 4.0
    load_start = os.getloadavg()
    measured_run = run(args)
    by_rate = measured_run["by_rate"]
    litellm_best = best_sustained(by_rate, "litellm")
    sluice_best = best_sustained(by_rate, "sluice_http")
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(load_start),
        "note": args.note,
        "sustained_goodput_rps": {
            "litellm": litellm_best,
            "sluice_http": sluice_best,
            "sluice_kafka": best_sustained(by_rate, "sluice_kafka"),
        },
        "ratio_sluice_http_to_litellm": round(sluice_best / litellm_best, 2) if litellm_best else None,
        **measured_run,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "side_by_side" if not (args.quick or args.without_litellm) else "side_by_side-partial"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("sustained_goodput_rps", "ratio_sluice_http_to_litellm")}))
    print(f"wrote {RESULTS / name}.json")


if __name__ == "__main__":
    main()
