"""`sluice up`: every part on the embedded defaults, as child processes of one supervisor.

Broker (unless SLUICE_KAFKA_BOOTSTRAP), topics, migrations (by the sink), worker, sink,
simulator (unless the catalog has no simulated model) and the HTTP edge with /healthz.
Ctrl-C or SIGTERM stops them all; children also die with the supervisor (PDEATHSIG), so no
orphan is left behind even if the supervisor is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiohttp import web

from sluice.bus import ensure_topics
from sluice.edge.gateway import Gateway
from sluice.edge.http import build_http_app
from sluice.local.broker import EmbeddedBroker, die_with_parent, port_open, start_broker
from sluice.providers.catalog import load_catalog
from sluice.settings import Settings
from sluice.warehouse.web import WebDashboard
from sluice.worker import ready_file


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Supervisor:
    settings: Settings
    children: list[Child] = field(default_factory=list)
    broker: EmbeddedBroker | None = None

    def spawn(self, name: str, *args: str) -> Child:
        log_path = self.settings.home / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "sluice", name, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            env=os.environ.copy(),
        )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def stop_all(self, timeout: float = 10.0) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
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
        settings = self.settings
        host, _, port = settings.bootstrap.rpartition(":")
        parts = {"broker": port_open(host, int(port))}
        for child in self.children:
            alive = child.process.poll() is None
            if child.name == "worker":
                parts["worker"] = alive and ready_file(settings, child.process.pid).exists()
            elif child.name == "sink":
                parts["sink"] = alive and (settings.run_dir / "sink.json").exists()
            elif child.name == "simulator":
                parts["simulator"] = alive and await _answers(
                    f"{settings.simulator_url.removesuffix('/v1')}/healthz"
                )
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
        supervisor.spawn("sink")
        where = f"{_public_dsn(settings.warehouse_dsn)} database {settings.clickhouse_database!r}"
        print(f"sink       ClickHouse {where}", flush=True)
        supervisor.spawn("worker")
        print("worker     stages validate -> sanitize -> route -> infer -> validate_response", flush=True)
        gateway = Gateway(settings)  # after topics; follows the tenants file
        await gateway.start()

        async def readiness() -> dict[str, bool]:
            return {**await supervisor.readiness(), **await gateway.readiness()}

        dashboard = WebDashboard(settings)
        runner = web.AppRunner(build_http_app(readiness, gateway=gateway, dashboard=dashboard))
        await runner.setup()
        await web.TCPSite(runner, settings.http_host, settings.http_port).start()
        base = f"http://{settings.http_host}:{settings.http_port}"
        print(f"http       {base}/v1 (OpenAI-compatible), {base}/healthz", flush=True)
        print(f"dashboard  {base}/dashboard, metrics {base}/metrics", flush=True)
        print(f"logs       {settings.home / 'logs'}", flush=True)
        announced = False
        try:
            while not stop.is_set():
                for child in supervisor.children:
                    if child.process.poll() is not None:
                        print(
                            f"{child.name} exited with code {child.process.returncode}; see {child.log_path}",
                            file=sys.stderr,
                            flush=True,
                        )
                        return 1
                if not announced and all((await readiness()).values()):
                    announced = True
                    print('ready      try: sluice send "hello"   (Ctrl-C stops everything)', flush=True)
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except TimeoutError:
                    continue
            return 0
        finally:
            await runner.cleanup()
            await gateway.stop()

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
