"""`sluice up`: every part on the embedded defaults, as child processes of one supervisor.

Broker (unless SLUICE_KAFKA_BOOTSTRAP), topics, migrations (by the sink), then the same
commands a deployment runs, `sluice simulator` (unless the catalog has no simulated model),
`sluice sink` and `sluice worker`, each with its health port chosen here; the gateway (HTTP
front door, /dashboard, /healthz, /readyz, /metrics) runs in this process through the same
code as `sluice gateway`, so its /healthz covers every part.

A child that crashes is restarted (at most RESTART_LIMIT times in RESTART_WINDOW_S; Kafka
redelivers what it had not finished, the idempotent stages make that safe); a child that keeps
crashing stops everything with exit code 1. Ctrl-C or SIGTERM drains and stops them all;
children also die with the supervisor (PDEATHSIG), so no orphan is left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sluice.bus import ensure_topics
from sluice.local.broker import EmbeddedBroker, die_with_parent, free_port, port_open, start_broker
from sluice.providers.catalog import load_catalog
from sluice.serve import serve_gateway_process
from sluice.settings import Settings

RESTART_LIMIT = 5
RESTART_WINDOW_S = 60.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    health_url: str
    restarts: deque[float] = field(default_factory=deque)


@dataclass
class RestartPolicy:
    """Restart a crashed child unless it crashed `limit` times within `window_s` seconds."""

    limit: int = RESTART_LIMIT
    window_s: float = RESTART_WINDOW_S

    def allows(self, history: deque[float], now: float) -> bool:
        while history and now - history[0] > self.window_s:
            history.popleft()
        return len(history) < self.limit


@dataclass
class Supervisor:
    settings: Settings
    children: list[Child] = field(default_factory=list)
    broker: EmbeddedBroker | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    ports: dict[str, int] = field(default_factory=dict)

    def _health_env(self, name: str) -> tuple[dict[str, str], str]:
        """Environment giving the child a known health port (kept across restarts), and its URL."""
        if name == "simulator":
            return {}, self.settings.simulator_url.removesuffix("/v1")
        port = self.ports.setdefault(name, free_port())
        return {f"SLUICE_{name.upper()}_HOST": "127.0.0.1", f"SLUICE_{name.upper()}_PORT": str(port)}, (
            f"http://127.0.0.1:{port}"
        )

    def spawn(self, name: str, *args: str) -> Child:
        log_path = self.settings.home / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env, url = self._health_env(name)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "sluice", name, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
                env={**os.environ, **env},
            )
        child = Child(name, process, log_path, url)
        self.children.append(child)
        return child

    def restart_crashed(self) -> Child | None:
        """Restart every child that exited; return one that may not be restarted (None: all fine)."""
        now = time.monotonic()
        for index, child in enumerate(list(self.children)):
            code = child.process.poll()
            if code is None:
                continue
            if not self.policy.allows(child.restarts, now):
                return child
            print(f"{child.name} exited with code {code}; restarting (see {child.log_path})", file=sys.stderr)
            child.restarts.append(now)
            fresh = self.spawn(child.name)
            fresh.restarts = child.restarts
            self.children.pop()  # spawn appended it: it takes the crashed child's place instead
            self.children[index] = fresh
        return None

    def stop_all(self, timeout: float | None = None) -> None:
        """SIGTERM every child (each drains), wait, then SIGKILL what is left."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + (timeout or self.settings.drain_timeout_s + 10)
        for child in reversed(self.children):
            remaining = max(deadline - time.monotonic(), 0.1)
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        if self.broker is not None:
            self.broker.stop()

    async def readiness(self) -> dict[str, bool]:
        host, _, port = self.settings.bootstrap.rpartition(":")
        parts = {"broker": port_open(host, int(port))}
        for child in self.children:
            ready = child.process.poll() is None and await _answers(f"{child.health_url}/readyz")
            parts[child.name] = ready
        return parts


async def _answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0) as http:
            return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


def run_up(settings: Settings) -> int:
    """Blocking: start everything, print where it runs, wait for a signal, stop everything."""
    settings.home.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(settings)
    stop = asyncio.Event()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        if settings.uses_embedded_broker:
            supervisor.broker = start_broker(
                port=settings.embedded_broker_port, log_path=settings.home / "logs" / "broker.log"
            )
            print(f"broker     kafka://{settings.bootstrap} (embedded Tansu, in-memory)", flush=True)
        else:
            print(f"broker     kafka://{settings.bootstrap} (external)", flush=True)
        created = await ensure_topics(settings)
        print(f"topics     {len(created)} created, prefix {settings.topic_prefix!r}", flush=True)
        if load_catalog(settings).uses_simulator:
            supervisor.spawn("simulator")
            print(f"simulator  {settings.simulator_url} (simulated models, not real LLMs)", flush=True)
        sink = supervisor.spawn("sink")
        where = f"{_public_dsn(settings.warehouse_dsn)} database {settings.clickhouse_database!r}"
        print(f"sink       ClickHouse {where}; health {sink.health_url}/readyz", flush=True)
        worker = supervisor.spawn("worker")
        stages = "validate -> sanitize -> route -> infer -> validate_response"
        print(f"worker     {stages}; health {worker.health_url}/readyz", flush=True)
        gateway_stop = asyncio.Event()

        def listening(base: str) -> None:
            print(f"http       {base}/v1 (OpenAI-compatible), {base}/healthz, {base}/readyz", flush=True)
            print(f"dashboard  {base}/dashboard, metrics {base}/metrics", flush=True)
            print(f"logs       {settings.home / 'logs'}", flush=True)

        gateway = asyncio.create_task(
            serve_gateway_process(
                settings, gateway_stop, extra_readiness=supervisor.readiness, on_listening=listening
            )
        )
        announced = False
        try:
            while not stop.is_set():
                if gateway.done():
                    await gateway  # raises what stopped it
                    return 1
                failing = supervisor.restart_crashed()
                if failing is not None:
                    print(
                        f"{failing.name} keeps crashing ({RESTART_LIMIT} restarts in "
                        f"{RESTART_WINDOW_S:.0f} s); stopping everything. See {failing.log_path}",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
                if not announced and all((await supervisor.readiness()).values()):
                    announced = True
                    print('ready      try: sluice send "hello"   (Ctrl-C stops everything)', flush=True)
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except TimeoutError:
                    continue
            return 0
        finally:
            gateway_stop.set()
            await asyncio.gather(gateway, return_exceptions=True)

    try:
        return asyncio.run(main())
    finally:
        # A second Ctrl-C must not interrupt the orderly stop and leave children behind.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        print("stopping   ...", flush=True)
        supervisor.stop_all()
        print("stopped", flush=True)


def _public_dsn(dsn: str) -> str:
    """The DSN without credentials, for printing."""
    scheme, _, rest = dsn.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
