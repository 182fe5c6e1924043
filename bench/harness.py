"""What the benchmarks share: start Sluice's processes on given settings, wait until requests
can flow, pace an open-loop load, and read a process's CPU time. Imported by the scripts in
this directory (run as `python bench/<name>.py`, which puts this directory on sys.path)."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from sluice.local.broker import free_port
from sluice.settings import Settings
from sluice.warehouse.queries import running_sink_url

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine(load_start: tuple[float, float, float]) -> dict[str, Any]:
    """The facts a result file keeps about the box it was measured on, with the load average at
    the start (`os.getloadavg()` taken then) and now."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_1_5_15_at_start": [round(x, 2) for x in load_start],
        "loadavg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def start_process(settings: Settings, logs: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    """`python <args>` (default: `-m sluice <name>`) with these settings, logging to logs/<name>.log."""
    logs.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, *(args or ("-m", "sluice", name))],
        env=settings.child_env(os.environ),
        stdout=(logs / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM all (they drain in parallel), then wait for each; kill what outlives `timeout`."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll `check` (HTTP errors count as not yet) until true; fail loudly after `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass  # not listening yet: poll again
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not ready within {timeout}s")


def wait_pipeline_ready(settings: Settings, worker: subprocess.Popen[bytes]) -> None:
    """The worker has its partitions (ready file) and the simulator answers /healthz."""
    wait_until(lambda: (settings.run_dir / f"worker-{worker.pid}.ready").exists(), "worker")
    health = settings.simulator_url.removesuffix("/v1") + "/healthz"
    wait_until(lambda: httpx.get(health).status_code == 200, "simulator")


def zero_latency_settings(home: Path, bootstrap: str, **overrides: Any) -> Settings:
    """Embedded defaults against a model simulator that answers at once, with short consumer
    group timeouts (workers join fast) and free ports: the benches that time Sluice itself."""
    values: dict[str, Any] = {
        "home": home,
        "kafka_bootstrap": bootstrap,
        "simulator_port": free_port(),
        "simulator_seed": 1,
        "simulator_latency_ms": 0,
        "simulator_latency_jitter_ms": 0,
        "broker_session_timeout_s": 3,
        "broker_rebalance_timeout_s": 3,
        "broker_heartbeat_interval_s": 0.5,
        "http_port": free_port(),
    }
    return Settings(**{**values, **overrides})


def start_http_stack(
    settings: Settings, logs: Path, *, with_simulator: bool = True
) -> dict[str, subprocess.Popen[bytes]]:
    """Simulator (unless one already serves `settings.simulator_port`), sink, worker and gateway
    (`sluice gateway`, as deployed), each ready to serve; all stopped again if one is not."""
    names = ("simulator", "sink", "worker", "gateway") if with_simulator else ("sink", "worker", "gateway")
    processes = {name: start_process(settings, logs, name) for name in names}
    try:
        wait_pipeline_ready(settings, processes["worker"])
        wait_until(lambda: running_sink_url(settings) is not None, "sink")
        health = f"http://127.0.0.1:{settings.http_port}/healthz"
        wait_until(lambda: httpx.get(health).status_code == 200, "gateway")
    except BaseException:
        stop_processes(list(processes.values()))
        raise
    return processes


async def open_loop(rate: float, duration: float, one: Callable[[int], Awaitable[object]]) -> None:
    """Start `one(i)` at `rate` per second for `duration` seconds, whether or not earlier calls
    have finished (open loop: a slow pipeline shows as latency, not as a lower rate)."""
    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * duration)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
