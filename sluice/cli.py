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
from datetime import UTC, datetime, timedelta
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
            if args.api_key:
                options["api_key"] = args.api_key
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
                        **({"api_key": args.api_key} if args.api_key else {}),
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


def _load_document(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text("utf-8")) if path.exists() else {}


def _access_table(document: dict[str, Any], path: Path, tenant: str) -> dict[str, Any]:
    tenants = document.setdefault("tenants", {})
    config = tenants.setdefault(tenant, {}) if isinstance(tenants, dict) else None
    access = config.setdefault("access", {}) if isinstance(config, dict) else None
    if not isinstance(access, dict):
        raise ValueError(f"{path}: tenants.{tenant}.access is not a table")
    return access


def _write_document(path: Path, document: dict[str, Any], tenant: str) -> None:
    """Validate, then replace the file atomically (running processes never read half a file)."""
    import tomli_w

    from sluice.tenants import TenantConfig

    TenantConfig.model_validate(document["tenants"][tenant])  # refuse to write what would not load
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(tomli_w.dumps(document).encode("utf-8"))
    if path.exists():
        os.chmod(temporary, path.stat().st_mode & 0o777)
    os.replace(temporary, path)


def add_key_to_config(path: Path, tenant: str, *, label: str = "", expires_at: datetime | None = None) -> str:
    """Generate an API key for `tenant`, append its SHA-256 (with label, creation time and
    optional expiry) to `[[tenants.<tenant>.access.keys]]` in the TOML file `path` (created when
    missing; everything else is kept, comments excepted) and return the key. The key itself is
    never written anywhere."""
    from sluice.tenants import hash_key, new_api_key

    if not TENANT_ID.fullmatch(tenant):
        raise ValueError(f"tenant id must match [a-z0-9_-]{{1,64}}, not {tenant!r}")
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValueError("the expiry needs a time zone, e.g. 2027-01-31T00:00:00Z")
    document = _load_document(path)
    access = _access_table(document, path, tenant)
    key = new_api_key()
    entry: dict[str, Any] = {"sha256": hash_key(key), "created_at": datetime.now(UTC).replace(microsecond=0)}
    if label:
        entry["label"] = label
    if expires_at is not None:
        entry["expires_at"] = expires_at
    if access.get("disabled") and not access.get("keys") and not access.get("api_key_sha256"):
        access["disabled"] = False  # disabled when its last key was revoked: a new key enables it
    access["keys"] = [*access.get("keys", []), entry]
    _write_document(path, document, tenant)
    return key


def revoke_key_in_config(path: Path, tenant: str, key_or_id: str) -> int:
    """Remove a tenant's key, named by the key itself or by its id (the start of its hash, at
    least 8 hex digits, as `list-keys` shows it); returns how many entries were removed. When
    the last key goes, the tenant is disabled: a tenant without keys would need none."""
    from sluice.tenants import hash_key

    if not path.exists():
        raise ValueError(f"{path} does not exist")
    document = _load_document(path)
    if tenant not in document.get("tenants", {}):
        raise ValueError(f"tenant {tenant!r} is not configured in {path}")
    access = _access_table(document, path, tenant)
    wanted = key_or_id.strip().lower()
    if re.fullmatch(r"[0-9a-f]{8,64}", wanted):

        def doomed(digest: str) -> bool:
            return digest.lower().startswith(wanted) or digest.lower() == hash_key(key_or_id)

    elif key_or_id:

        def doomed(digest: str) -> bool:
            return digest.lower() == hash_key(key_or_id)

    else:
        raise ValueError("name the key to revoke: the key itself or its id from list-keys")
    plain = [digest for digest in access.get("api_key_sha256", []) if not doomed(str(digest))]
    keys = [entry for entry in access.get("keys", []) if not doomed(str(entry.get("sha256", "")))]
    removed = len(access.get("api_key_sha256", [])) + len(access.get("keys", [])) - len(plain) - len(keys)
    if removed > 1 and not key_or_id.startswith("sk-"):
        raise ValueError(f"{key_or_id!r} matches {removed} keys; give more digits of the id")
    if removed:
        access["api_key_sha256"], access["keys"] = plain, keys
        if not plain and not keys:
            access["disabled"] = True
        _write_document(path, document, tenant)
    return removed


def _cmd_tenant_add_key(_: Settings, args: argparse.Namespace) -> int:
    path = Path(args.config)
    try:
        expires_at = None
        if args.expires_in_days is not None:
            expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=args.expires_in_days)
        key = add_key_to_config(path, args.tenant, label=args.label, expires_at=expires_at)
    except (ValueError, OSError) as exc:  # TOMLDecodeError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(key)
    until = f", valid until {expires_at.isoformat()}" if expires_at else ""
    print(
        f"New API key for tenant {args.tenant!r}{until} (its SHA-256 was added to {path}).\n"
        "Store it now: it is shown only this once and Sluice keeps only its hash.\n"
        "Running processes that watch this file accept it within a few seconds.",
        file=sys.stderr,
    )
    return 0


def _cmd_tenant_revoke_key(_: Settings, args: argparse.Namespace) -> int:
    path = Path(args.config)
    try:
        removed = revoke_key_in_config(path, args.tenant, args.key)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not removed:
        print(f"error: tenant {args.tenant!r} has no such key in {path}", file=sys.stderr)
        return 1
    print(f"Revoked {removed} key(s) of tenant {args.tenant!r} in {path}.")
    print("Running processes that watch this file refuse it within a few seconds.", file=sys.stderr)
    return 0


def _configured_tenants(settings: Settings, config: str | None) -> dict[str, Any]:
    from sluice.tenants import read_tenants_file

    return read_tenants_file(Path(config)) if config is not None else dict(settings.tenants)


def _cmd_tenant_list(settings: Settings, args: argparse.Namespace) -> int:
    try:
        tenants = _configured_tenants(settings, args.config)
    except (ValueError, OSError) as exc:  # pydantic's errors are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not tenants:
        print("no tenants configured: every tenant (e.g. demo) has the defaults and needs no key")
        return 0
    for name in sorted(tenants):
        access = tenants[name].access
        models = ", ".join(access.allowed_models) or "all"
        state = " disabled" if access.disabled else ""
        print(f"{name:<24} keys={len(access.all_keys):<3} models={models}{state}")
    return 0


def _cmd_tenant_list_keys(settings: Settings, args: argparse.Namespace) -> int:
    try:
        tenants = _configured_tenants(settings, args.config)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    names = [args.tenant] if args.tenant else sorted(tenants)
    rows = [("TENANT", "KEY ID", "STATE", "CREATED", "EXPIRES", "LABEL")]
    for name in names:
        if name not in tenants:
            print(f"error: tenant {name!r} is not configured", file=sys.stderr)
            return 1
        for key in tenants[name].access.all_keys:
            state = "active" if key.valid_at(now) else "expired"
            created = key.created_at.isoformat() if key.created_at else "-"
            expires = key.expires_at.isoformat() if key.expires_at else "never"
            rows.append((name, key.id, state, created, expires, key.label or "-"))
    if len(rows) == 1:
        print("no API keys configured")
        return 0
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[5])
    return 0


API_KEY_HELP = "the tenant's API key, needed once tenants have keys (default: $SLUICE_API_KEY)"


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
    send.add_argument("--api-key", default=os.environ.get("SLUICE_API_KEY"), help=API_KEY_HELP)
    send.add_argument("--model", default="auto")
    send.add_argument("--max-tokens", type=int, default=0)
    send.add_argument("--timeout", type=float, default=60.0)
    send.set_defaults(run=_cmd_send)
    load = sub.add_parser("load", help="steady load with a progress bar; prints percentiles")
    load.add_argument("--rate", type=float, required=True, help="requests per second")
    load.add_argument("--duration", type=float, required=True, help="seconds")
    load.add_argument("--tenant", default="demo")
    load.add_argument("--api-key", default=os.environ.get("SLUICE_API_KEY"), help=API_KEY_HELP)
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
    add_key.add_argument("--label", default="", help="what the key is for, shown by list-keys")
    add_key.add_argument(
        "--expires-in-days", type=float, default=None, help="the key stops working after this many days"
    )
    revoke = tenant.add_parser("revoke-key", help="remove an API key; running processes refuse it in seconds")
    revoke.add_argument("tenant")
    revoke.add_argument("key", help="the key itself, or its id as list-keys shows it")
    revoke.add_argument("--config", default="sluice.toml", help="TOML file to write (default: %(default)s)")
    revoke.set_defaults(run=_cmd_tenant_revoke_key)
    listing = tenant.add_parser("list", help="configured tenants and how many keys each has")
    listing.add_argument("--config", default=None, help="read this TOML file (default: the settings)")
    listing.set_defaults(run=_cmd_tenant_list)
    list_keys = tenant.add_parser("list-keys", help="each API key's id, state, creation, expiry and label")
    list_keys.add_argument("tenant", nargs="?", default=None, help="only this tenant (default: all)")
    list_keys.add_argument("--config", default=None, help="read this TOML file (default: the settings)")
    list_keys.set_defaults(run=_cmd_tenant_list_keys)
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
