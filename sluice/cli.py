"""The `sluice` command: run the parts, send requests, load-test, read the dashboard."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tomllib
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sluice.settings import Settings


def _cmd_up(settings: Settings, _: argparse.Namespace) -> int:
    from sluice.local.up import run_up

    return run_up(settings)


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.worker import run_worker

    run_worker(settings, loglevel=args.loglevel)
    return 0


def _cmd_gateway(settings: Settings, _: argparse.Namespace) -> int:
    from sluice.serve import run_gateway

    return run_gateway(settings)


def _cmd_sink(settings: Settings, _: argparse.Namespace) -> int:
    from sluice.serve import run_sink_process

    return run_sink_process(settings)


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


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.warehouse.migrate import apply_migrations

    applied = apply_migrations(settings)
    names = ", ".join(migration.name for migration in applied) or "none pending"
    print(f"applied {len(applied)} migration(s): {names}")
    if args.topics:
        from sluice.bus import TopicLayoutError, ensure_topics

        try:
            created = asyncio.run(ensure_topics(settings))
        except TopicLayoutError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"topics on {settings.bootstrap}: {len(created)} created, the rest match the declared layout")
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
    from sluice.warehouse.dashboard import parse_range, render_dashboard

    try:
        minutes = parse_range(args.range) if args.range else args.minutes
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return render_dashboard(settings, minutes=minutes)


TENANT_ID = re.compile(r"[a-z0-9_-]{1,64}")


def add_key_to_config(path: Path, tenant: str) -> str:
    """Generate an API key for `tenant`, append its SHA-256 to `[tenants.<tenant>.access]
    api_key_sha256` in the TOML file `path` (created when missing; everything else is kept,
    comments excepted) and return the key. The key itself is never written anywhere."""
    import tomli_w

    from sluice.tenants import TenantConfig, hash_key, new_api_key

    if not TENANT_ID.fullmatch(tenant):
        raise ValueError(f"tenant id must match [a-z0-9_-]{{1,64}}, not {tenant!r}")
    document: dict[str, Any] = tomllib.loads(path.read_text("utf-8")) if path.exists() else {}
    tenants = document.setdefault("tenants", {})
    config = tenants.setdefault(tenant, {})
    access = config.setdefault("access", {})
    if not all(isinstance(part, dict) for part in (tenants, config, access)):
        raise ValueError(f"{path}: tenants.{tenant}.access is not a table")
    key = new_api_key()
    access["api_key_sha256"] = [*access.get("api_key_sha256", []), hash_key(key)]
    TenantConfig.model_validate(config)  # refuse to write a file the settings could not load
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(tomli_w.dumps(document).encode("utf-8"))
    if path.exists():
        os.chmod(temporary, path.stat().st_mode & 0o777)
    os.replace(temporary, path)
    return key


def _cmd_tenant_add_key(_: Settings, args: argparse.Namespace) -> int:
    path = Path(args.config)
    try:
        key = add_key_to_config(path, args.tenant)
    except (ValueError, OSError, tomllib.TOMLDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(key)
    print(
        f"New API key for tenant {args.tenant!r} (its SHA-256 was added to {path}).\n"
        "Store it now: it is shown only this once and Sluice keeps only its hash.\n"
        "Processes already running load the new key when restarted.",
        file=sys.stderr,
    )
    return 0


def _cmd_tenant_list(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.tenants import TenantConfig

    if args.config is not None:
        try:
            document = tomllib.loads(Path(args.config).read_text("utf-8"))
            raw = document.get("tenants", {})
            tenants = {name: TenantConfig.model_validate(config) for name, config in raw.items()}
        except (ValueError, OSError, AttributeError) as exc:  # pydantic's errors are ValueErrors
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:
        tenants = dict(settings.tenants)
    if not tenants:
        print("no tenants configured: every tenant (e.g. demo) has the defaults and needs no key")
        return 0
    for name in sorted(tenants):
        access = tenants[name].access
        models = ", ".join(access.allowed_models) or "all"
        print(f"{name:<24} keys={len(access.api_key_sha256):<3} models={models}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run everything on the embedded defaults").set_defaults(run=_cmd_up)
    worker = sub.add_parser("worker", help="run the pipeline's stage agents")
    worker.add_argument("--loglevel", default="warning")
    worker.set_defaults(run=_cmd_worker)
    sub.add_parser(
        "gateway",
        help="serve the OpenAI-compatible HTTP front door, /dashboard, /healthz, /readyz and /metrics",
    ).set_defaults(run=_cmd_gateway)
    sub.add_parser("sink", help="mirror events into ClickHouse").set_defaults(run=_cmd_sink)
    sub.add_parser("simulator", help="run the OpenAI-compatible model simulator").set_defaults(
        run=_cmd_simulator
    )
    broker = sub.add_parser("broker", help="run the embedded Kafka-protocol broker alone")
    broker.add_argument("--port", type=int, default=0)
    broker.set_defaults(run=_cmd_broker)
    migrate = sub.add_parser("migrate", help="apply ClickHouse migrations (and create Kafka topics)")
    migrate.add_argument(
        "--topics", action="store_true", help="also create missing Kafka topics and check the existing ones"
    )
    migrate.set_defaults(run=_cmd_migrate)
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
    dashboard.add_argument("--minutes", type=int, default=60, help="time range in minutes")
    dashboard.add_argument("--range", default=None, help="time range as 15m, 6h or 1d (overrides --minutes)")
    dashboard.set_defaults(run=_cmd_dashboard)
    tenant = sub.add_parser("tenant", help="tenant API keys").add_subparsers(dest="action", required=True)
    add_key = tenant.add_parser("add-key", help="generate an API key; print it once, store its hash")
    add_key.add_argument("tenant")
    add_key.add_argument("--config", default="sluice.toml", help="TOML file to write (default: %(default)s)")
    add_key.set_defaults(run=_cmd_tenant_add_key)
    listing = tenant.add_parser("list", help="configured tenants and how many keys each has")
    listing.add_argument("--config", default=None, help="read this TOML file (default: the settings)")
    listing.set_defaults(run=_cmd_tenant_list)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError: name the setting, no traceback
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        sys.exit(2)
    from sluice.bus import TopicLayoutError

    try:
        sys.exit(args.run(settings, args))
    except TopicLayoutError as exc:  # a start-up refusal, explained: no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
