"""Where the sink's CPU goes per record: the Python schema check, and the engine's work split by
taking views away, at several insert sizes.

    python bench/sink_profile.py                       (100k requests, ~0.5M records)
    python bench/sink_profile.py --batches 10000,20000 --variants all,no_rollups --rounds 3

Records are bench/analytics.py's, at the density of its 10M-request run (10M requests over 7
days: a one-hour window holds as many stored events as there), so the duplicate lookups read what
they would read there. The check (`Sink.add`) is timed alone; then each variant gets a fresh
database with every migration, the views named below dropped, and the batches go through
`write_batch` one after the other (no overlap). CPU is the process's (engine threads and
background merges included) and the inserting thread's own, per record; the median over
`--rounds` rounds, variants alternating, since the box is shared.

Variants (each against `all`): `parse_only` keeps no view on the JSON entry table (the engine
only parses); `no_dedup` keeps the converting views but stores nothing (no duplicate lookups, no
raw tables, no rollups); `no_lookup` stores and rolls up without looking for stored copies;
`no_rollups` stores the raw tables without the per-minute rollups (and so without the hourly ones).
Results go to bench/results/sink_profile.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import analytics  # the sibling bench: the same generated records

from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse, connect
from sluice.warehouse.migrate import default_migrations_dir, migrate
from sluice.warehouse.sink import Batch, Sink, SinkRecord, SinkStats, write_batch

RESULTS = Path(__file__).resolve().parent / "results"
PASS_THROUGH = (
    "CREATE MATERIALIZED VIEW {db}.events_dedup_mv TO {db}.events AS SELECT * FROM {db}.events_incoming",
    "CREATE MATERIALIZED VIEW {db}.requests_dedup_mv TO {db}.requests AS"
    " SELECT * FROM {db}.requests_incoming",
)
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # views dropped, statements added
    "all": ((), ()),
    "parse_only": (("events_json_mv", "requests_json_mv"), ()),
    "no_dedup": (("events_dedup_mv", "requests_dedup_mv"), ()),
    "no_lookup": (("events_dedup_mv", "requests_dedup_mv"), PASS_THROUGH),
    "no_rollups": (("stage_minute_mv", "deployment_minute_mv", "request_minute_mv", "request_routes_mv"), ()),
}


def generated(requests: int, batch: int, sink: Sink) -> list[list[SinkRecord]]:
    """bench/analytics.py's records, in its batches, at the density of its 10M run."""
    args = argparse.Namespace(
        requests=requests, days=7 * requests / 10_000_000, tenants=20, models=5, error_rate=0.03,
        redeliver=0.01, batch=batch, seed=7,
    )  # fmt: skip
    span_ms = int(args.days * 86_400_000)
    now_ms = int(time.time() * 1000)
    return [analytics.records(b, sink) for b, _ in analytics.generate(args, now_ms - span_ms, span_ms)]


def checked(sink: Sink, batches: list[list[SinkRecord]]) -> tuple[list[Batch], float]:
    """The batches through Sink.add; the best of three passes' CPU µs per record."""
    records = sum(map(len, batches))
    best, found = float("inf"), []
    for _ in range(3):
        started = time.process_time()
        found = []
        for records_of in batches:
            batch = Batch()
            for record in records_of:
                sink.add(batch, record)
            found.append(batch)
        best = min(best, time.process_time() - started)
    return found, best / records * 1e6


def engine(warehouse: Warehouse, variant: str, batches: list[Batch], records: int) -> dict[str, float]:
    """Insert the checked batches into a fresh database with `variant`'s views."""
    warehouse.command("DROP DATABASE IF EXISTS {db}")
    migrate(warehouse, default_migrations_dir())
    dropped, added = VARIANTS[variant]
    for view in dropped:
        warehouse.command(f"DROP VIEW IF EXISTS {{db}}.{view}")
    for statement in added:
        warehouse.command(statement)
    stats = SinkStats()
    wall = cpu = thread = 0.0
    for checked_batch in batches:
        batch = Batch(
            event_lines=list(checked_batch.event_lines),
            typed_lines=list(checked_batch.typed_lines),
            ended_requests=checked_batch.ended_requests,
            rows={table: list(rows) for table, rows in checked_batch.rows.items()},
        )
        w0, c0, t0 = time.perf_counter(), time.process_time(), time.thread_time()
        write_batch(warehouse, batch, stats)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        thread += time.thread_time() - t0
    warehouse.command("DROP DATABASE IF EXISTS {db}")
    return {
        "cpu_us_per_record": cpu / records * 1e6,
        "insert_thread_us_per_record": thread / records * 1e6,
        "wall_us_per_record": wall / records * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--batches", default="10000,20000", help="requests per insert (~5 records each)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sluice-sink-profile-"))
    settings = Settings(home=root / "home", clickhouse_dsn=f"chdb://{root / 'clickhouse'}")
    client = connect(settings)
    sink = Sink(settings, client, SinkStats(), asyncio.Event())
    sizes = [int(size) for size in args.batches.split(",")]
    variants = args.variants.split(",")
    prepared: dict[int, tuple[list[Batch], int]] = {}
    check_us: list[float] = []
    for size in sizes:
        raw = generated(args.requests, size, sink)
        batches, us = checked(sink, raw)
        prepared[size] = (batches, sum(map(len, raw)))
        check_us.append(us)
    samples: dict[str, list[dict[str, float]]] = {}
    try:
        for round_ in range(args.rounds):
            for size in sizes:
                for variant in variants:
                    database = f"sink_profile_{round_}_{size}_{variant}"
                    warehouse = Warehouse(client.client, database, settings.warehouse_dsn)
                    batches, records = prepared[size]
                    found = engine(warehouse, variant, batches, records)
                    samples.setdefault(f"{variant}@{size * 5}", []).append(found)
                    print(f"{variant} @ {size * 5:,} records/insert: {found}", flush=True)
    finally:
        client.close()
    result: dict[str, Any] = {
        "settings": vars(args),
        "records": {str(size * 5): prepared[size][1] for size in sizes},
        "check_us_per_record": round(statistics.median(check_us), 2),
        "engine_median": {
            key: {name: round(statistics.median(s[name] for s in runs), 2) for name in runs[0]}
            for key, runs in samples.items()
        },
        "loadavg": os.getloadavg(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, shared with other engineers' work while measured",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sink_profile.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
