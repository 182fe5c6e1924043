"""The `sluice` command: run the parts, send requests, load-test, read the dashboard."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from sluice.settings import Settings


def _cmd_up(settings: Settings, _: argparse.Namespace) -> int:
    from sluice.local.up import run_up

    return run_up(settings)


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.worker import run_worker

    run_worker(settings, loglevel=args.loglevel)
    return 0


def _cmd_sink(settings: Settings, _: argparse.Namespace) -> int:
    from sluice.warehouse.sink import main as sink_main

    sink_main(settings)
    return 0


def _cmd_simulator(settings: Settings, _: argparse.Namespace) -> int:
    from sluice.local.simulator import run

    run(settings)
    return 0


def _cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    import signal
    import threading

    from sluice.local.broker import start_broker

    port = args.port or int(settings.bootstrap.rpartition(":")[2])
    broker = start_broker(port=port, log_path=settings.home / "logs" / "broker.log")
    print(
        f"broker kafka://{broker.bootstrap} (embedded Tansu, in-memory storage); Ctrl-C stops it", flush=True
    )
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    while not stopped.wait(0.5):
        if broker.process.poll() is not None:
            print(f"broker exited with code {broker.process.returncode}", file=sys.stderr)
            return 1
    broker.stop()
    return 0


def _cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    from sluice.warehouse.migrate import apply_migrations

    applied = apply_migrations(settings)
    names = ", ".join(migration.name for migration in applied) or "none pending"
    print(f"applied {len(applied)} migration(s): {names}")
    return 0


def _cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.edge.client import SluiceClient, SluiceTimeout

    async def send() -> int:
        async with SluiceClient(settings=settings, timeout_s=args.timeout) as client:
            options: dict[str, Any] = {"model": args.model}
            if args.max_tokens:
                options["max_tokens"] = args.max_tokens
            try:
                response = await client.request(args.prompt, tenant=args.tenant, **options)
            except SluiceTimeout as exc:
                print(f"timeout: {exc}", file=sys.stderr)
                return 2
        print(json.dumps(response.model_dump(mode="json"), indent=2))
        return 0 if response.status.value == "ok" else 1

    return asyncio.run(send())


def _cmd_load(settings: Settings, args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from sluice.edge.client import SluiceClient
    from sluice.edge.load import run_load

    async def load() -> int:
        async with SluiceClient(settings=settings) as client:
            with Progress() as progress:
                task = progress.add_task("answered", total=int(args.rate * args.duration))
                report = await run_load(
                    client,
                    args.rate,
                    args.duration,
                    make_request=lambda i: {
                        "messages": f"{args.prompt} #{i}",
                        "tenant": args.tenant,
                        "model": args.model,
                        "correlation_id": f"load-{uuid.uuid4().hex}",
                    },
                    on_progress=lambda done, _total: progress.update(task, completed=done),
                )
        print(json.dumps(report.summary(), indent=2))
        return 0 if report.answered == report.sent else 1

    return asyncio.run(load())


def _cmd_dashboard(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.warehouse.dashboard import render_dashboard

    return render_dashboard(settings, minutes=args.minutes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run everything on the embedded defaults").set_defaults(run=_cmd_up)
    worker = sub.add_parser("worker", help="run the pipeline's stage agents")
    worker.add_argument("--loglevel", default="warning")
    worker.set_defaults(run=_cmd_worker)
    sub.add_parser("sink", help="mirror events into ClickHouse").set_defaults(run=_cmd_sink)
    sub.add_parser("simulator", help="run the OpenAI-compatible model simulator").set_defaults(
        run=_cmd_simulator
    )
    broker = sub.add_parser("broker", help="run the embedded Kafka-protocol broker alone")
    broker.add_argument("--port", type=int, default=0)
    broker.set_defaults(run=_cmd_broker)
    sub.add_parser("migrate", help="apply ClickHouse migrations").set_defaults(run=_cmd_migrate)
    send = sub.add_parser("send", help="send one request and print its response")
    send.add_argument("prompt")
    send.add_argument("--tenant", default="demo")
    send.add_argument("--model", default="auto")
    send.add_argument("--max-tokens", type=int, default=0)
    send.add_argument("--timeout", type=float, default=60.0)
    send.set_defaults(run=_cmd_send)
    load = sub.add_parser("load", help="steady load with a progress bar; prints percentiles")
    load.add_argument("--rate", type=float, required=True, help="requests per second")
    load.add_argument("--duration", type=float, required=True, help="seconds")
    load.add_argument("--tenant", default="demo")
    load.add_argument("--model", default="auto")
    load.add_argument("--prompt", default="Summarise the benefits of queues")
    load.set_defaults(run=_cmd_load)
    dashboard = sub.add_parser("dashboard", help="cost, latency and error figures from ClickHouse")
    dashboard.add_argument("--minutes", type=int, default=60)
    dashboard.set_defaults(run=_cmd_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.run(Settings(), args))
