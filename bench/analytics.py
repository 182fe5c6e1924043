"""Analytics at production volume: load N synthetic requests into the project's own schema, then
time every named query at 1 hour, 24 hours and 7 days, and the web dashboard.

    python bench/analytics.py --requests 1000000      (develop here)
    python bench/analytics.py --requests 10000000     (the figure that counts; ~50M events)

The load uses the project's migrations and the sink's own path: each batch's Kafka records (event
records as JSON, ratings) go through `Sink.add` (the schema check per record) and `write_batch`
(the event records handed to the engine as JSONEachRow, the deduplicating entry tables with
every view on); only that is timed. Records come in time order over `--days` days: `--tenants`
tenants, `--models` models with two replicas each (infer records the replica and its latency),
`--error-rate` failed requests (4 events; answered ones have 5), one rating per 20 requests,
and `--redeliver` of the requests sent again (every event and its rating) a few batches later,
as a sink restart would. It checks that the copies changed no figure.

Each query runs `--repeats` times per window (median reported). `read_rows` is what the engine
reports it read running the query (`rows_read` of its JSON output), `rows_to_read` its estimate
before running (`EXPLAIN ESTIMATE`, after partition and primary-key pruning; the embedded
engine has no query_log). Results are merged into bench/results/analytics.json (one entry per size) and
bench/results/analytics.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse, connect
from sluice.warehouse.migrate import default_migrations_dir, migrate
from sluice.warehouse.queries import QUERIES, run_query
from sluice.warehouse.query_server import start_query_server
from sluice.warehouse.sink import Batch as SinkBatch
from sluice.warehouse.sink import Sink, SinkRecord, SinkStats, write_batch
from sluice.warehouse.web import read_dashboard

RESULTS = Path(__file__).resolve().parent / "results"
README_BEGIN, README_END = "<!-- analytics:begin -->", "<!-- analytics:end -->"
WINDOWS = {"1h": 60, "24h": 24 * 60, "7d": 7 * 24 * 60}
STAGES = ("validate", "sanitize", "route", "infer", "validate_response")
ROUTES = ("simple", "general", "hard", "code", "long")
LABELS = ("good", "hallucination", "slow", "wrong", "")
FEEDBACK_EVERY = 20
REDELIVER_AFTER = 3  # copies go out this many batches later
QUESTIONS = 500
DEPLOYMENTS = ("gpu-a", "gpu-b")  # each model's replicas


def _infer_attributes(
    stage: int, replica: int, failed: bool, retried: bool, duration_ms: float
) -> dict[str, str]:
    """What infer records (agents/infer.py): the replica called last, the model's latency, and the
    replicas of failed calls (the other one first, then the last one too when the request failed);
    other stages record nothing here."""
    if STAGES[stage] != "infer":
        return {}
    found = {"deployment": DEPLOYMENTS[replica], "model_latency_ms": f"{duration_ms:.3f}"}
    errors = [DEPLOYMENTS[1 - replica]] * (failed or retried) + [DEPLOYMENTS[replica]] * failed
    if errors:
        found["deployment_errors"] = ",".join(errors)
    return found


def _iso(ms: np.ndarray) -> list[str]:
    """Epoch milliseconds as the ISO 8601 UTC text the pipeline's events carry."""
    return np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms", timezone="UTC").tolist()


def _exact(value: bytes) -> bytes:
    """A copy the size of its content: orjson's result keeps its 4 KB buffer, which would make
    the generated records, not the sink, the process's peak memory."""
    return bytes(memoryview(value))


def generate(args: argparse.Namespace, start_ms: int, span_ms: int) -> Iterator[tuple[Batch, Batch]]:
    """Batches of `args.batch` requests in time order, as the sink receives them: event records
    (JSON, the last event of a request with its summary) and rating records, with the
    redelivered copies of earlier batches appended; yields (batch, copies in it)."""
    rng = np.random.default_rng(args.seed)
    models = [f"model-{i}" for i in range(args.models)]
    price = np.linspace(0.004, 0.09, args.models)
    latency = np.linspace(120.0, 900.0, args.models)
    tenants = [f"tenant-{i:02d}" for i in range(args.tenants)]
    batches = -(-args.requests // args.batch)
    pending: dict[int, Batch] = {}
    for b in range(batches):
        first = b * args.batch
        n = min(args.batch, args.requests - first)
        lo = start_ms + span_ms * first // args.requests
        hi = start_ms + span_ms * (first + n) // args.requests
        finished = np.sort(rng.integers(lo, max(hi, lo + 1), n))
        model = rng.integers(0, args.models, n)
        tenant = rng.integers(0, args.tenants, n)
        failed = rng.random(n) < args.error_rate
        cached = ~failed & (rng.random(n) < 0.1)
        prompt = rng.integers(20, 400, n)
        completion = rng.integers(10, 256, n)
        paid = np.round((prompt + completion) * price[model] / 1000, 8)
        cost = np.where(cached | failed, 0.0, paid)
        durations = np.stack(
            [
                rng.uniform(0.2, 2, n),
                rng.uniform(1, 8, n),
                rng.uniform(0.1, 1, n),
                np.where(cached, 0.5, rng.gamma(4.0, latency[model] / 4)),
                rng.uniform(1, 10, n),
            ]
        )
        durations[4, failed] = 0.0
        total = durations.sum(axis=0)
        received = finished - total.astype(np.int64) - 1
        grounded = np.round(rng.random(n), 3)
        question = rng.integers(0, QUESTIONS, n)
        answer = np.where(rng.random(n) > 0.03, question, rng.integers(0, 10**6, n))
        replica = rng.integers(0, len(DEPLOYMENTS), n)
        retried = rng.random(n) < 0.05  # a failed call to a replica before the one that answered
        ids = [f"b{first + i}" for i in range(n)]
        tenant_names = [tenants[t] for t in tenant]
        offsets = np.cumsum(durations, axis=0)  # ms after received at which each stage ends
        received_iso = _iso(received)
        batch = Batch()
        for s, stage in enumerate(STAGES):
            ts = _iso(received + offsets[s].astype(np.int64))
            for i in range(n):
                if s == 4 and failed[i]:
                    continue
                last = s == 4 or (s == 3 and bool(failed[i]))
                ok_last = last and not failed[i]
                event: dict[str, Any] = {
                    "event_id": f"{ids[i]}/{stage}",
                    "request_id": ids[i],
                    "correlation_id": f"c-{ids[i]}",
                    "tenant": tenant_names[i],
                    "stage": stage,
                    "status": "failed" if failed[i] and s == 3 else "ok",
                    "ts": ts[i],
                    "duration_ms": float(durations[s, i]),
                    "model": models[model[i]] if s >= 2 else None,
                    "prompt_tokens": int(prompt[i]) if ok_last else 0,
                    "completion_tokens": int(completion[i]) if ok_last else 0,
                    "cost_usd": float(cost[i]) if ok_last else 0.0,
                    "cached": bool(cached[i]) and last,
                    "cache_savings_usd": float(paid[i]) if cached[i] and last else 0.0,
                    "error_code": ("timeout" if i % 2 else "model_unavailable")
                    if failed[i] and s == 3
                    else None,
                    "attributes": {
                        "max_tokens": "256",
                        "question_hash": f"q{question[i]}",
                        "answer_hash": f"a{answer[i]}",
                    }
                    if ok_last
                    else _infer_attributes(
                        s, int(replica[i]), bool(failed[i]), bool(retried[i]), durations[s, i]
                    ),
                }
                if last:
                    event["summary"] = {
                        "received_at": received_iso[i],
                        "finished_at": ts[i],
                        "status": "failed" if failed[i] else "ok",
                        "latency_ms": float(offsets[s, i].astype(np.int64) + 1),
                        "groundedness": None if failed[i] else float(grounded[i]),
                        "hallucination": None if failed[i] else bool(grounded[i] < 0.08),
                        "schema_valid": None if failed[i] else True,
                        "route": ROUTES[model[i] % len(ROUTES)],
                    }
                batch.events.append((ids[i], _exact(orjson.dumps(event))))
        rated = np.arange(0, n, FEEDBACK_EVERY)
        end_ms = received + offsets[np.where(failed, 3, 4), np.arange(n)].astype(np.int64)
        ratings = rng.integers(-1, 2, len(rated))
        labels = rng.integers(0, len(LABELS), len(rated))
        for j, i in enumerate(rated):
            value = {
                "request_id": ids[i],
                "tenant": tenant_names[i],
                "rating": int(ratings[j]),
                "label": LABELS[int(labels[j])],
            }
            batch.ratings.append(
                (ids[i], first + int(i), int(end_ms[i]) + 30_000, _exact(orjson.dumps(value)))
            )
        _schedule_copies(batch, rng, args.redeliver, pending.setdefault(b + REDELIVER_AFTER, Batch()))
        copies = pending.pop(b, Batch())
        batch.events += copies.events
        batch.ratings += copies.ratings
        yield batch, copies
    for copies in pending.values():  # copies scheduled past the last batch go out at the end
        if copies.events or copies.ratings:
            yield copies, copies


@dataclass
class Batch:
    """A batch as generated: (request_id, event record) and (request_id, offset, timestamp ms,
    rating record); the request_id picks the redelivered copies."""

    events: list[tuple[str, bytes]] = field(default_factory=list)
    ratings: list[tuple[str, int, int, bytes]] = field(default_factory=list)


def _schedule_copies(batch: Batch, rng: np.random.Generator, share: float, into: Batch) -> None:
    """Pick `share` of the batch's requests; copy all their records (events and rating)."""
    chosen = {rid for rid in dict.fromkeys(rid for rid, _ in batch.events) if rng.random() < share}
    into.events += [item for item in batch.events if item[0] in chosen]
    into.ratings += [item for item in batch.ratings if item[0] in chosen]


def _counted(batches: Iterator[tuple[Batch, Batch]], copies: dict[str, int]) -> Iterator[tuple[Batch, Batch]]:
    """The batches as they are, adding up the redelivered copies each carries."""
    for generated, copied in batches:
        copies["events"] += len(copied.events)
        copies["requests"] += sum(1 for _, value in copied.events if b'"summary":{' in value)
        copies["feedback"] += len(copied.ratings)
        yield generated, copied


def records(batch: Batch, sink: Sink) -> list[SinkRecord]:
    """The batch as Kafka records of the sink's topics (a rating's position is its feedback_id)."""
    found = [SinkRecord(sink.events_topic, 0, n, value, 0) for n, (_, value) in enumerate(batch.events)]
    found += [SinkRecord(sink.feedback_topic, 0, offset, value, ts) for _, offset, ts, value in batch.ratings]
    return found


def load(warehouse: Warehouse, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Generate, then feed each batch's records through the sink's own path as `Sink.run` does:
    `Sink.add` (schema check per record) on this thread while the previous batch's `write_batch`
    (JSON into the engine) runs in a worker thread, one insert in flight (`--sequential`: check,
    then insert, nothing overlapped). Batches are generated `--chunk` at a time while the sink
    is idle, so generating never competes with the sink for the cores; each chunk then goes
    through the sink and its last insert is awaited (the pipeline drains once per chunk, which
    costs a little). Timed: those sink phases, wall clock. CPU: the process's CPU time (engine
    threads and background merges included) less the generator's."""
    now_ms = int(time.time() * 1000)
    span_ms = int(args.days * 86_400_000)
    stats = SinkStats()
    sink = Sink(settings, warehouse, stats, asyncio.Event())
    copies = {"events": 0, "requests": 0, "feedback": 0}
    consumed = 0
    insert_s = generator_cpu_s = held_mb = 0.0
    started, cpu_started = time.monotonic(), time.process_time()
    batches = generate(args, now_ms - span_ms, span_ms)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="insert") as worker:
        while True:
            cpu0 = time.thread_time()
            chunk = [
                records(generated, sink) for generated, _ in _counted(islice(batches, args.chunk), copies)
            ]
            generator_cpu_s += time.thread_time() - cpu0
            if not chunk:
                break
            held_mb = max(held_mb, sum(len(r.value or b"") for found in chunk for r in found) / 2**20)
            t0 = time.perf_counter()
            inflight: Future[None] | None = None
            while chunk:
                found = chunk.pop(0)
                consumed += len(found)
                batch = SinkBatch()
                for record in found:
                    sink.add(batch, record)
                del found
                if inflight is not None:
                    inflight.result()
                inflight = worker.submit(write_batch, warehouse, batch, stats)
                if args.sequential:
                    inflight.result()
            if inflight is not None:
                inflight.result()
            insert_s += time.perf_counter() - t0
    insert_cpu_s = time.process_time() - cpu_started - generator_cpu_s
    sent = {table: stats.rows_inserted[table] for table in copies}
    rows = sum(sent.values())
    stored = {
        table: int(warehouse.query(f"SELECT count() AS n FROM {{db}}.{table}")[0]["n"]) for table in sent
    }
    return {
        "records_consumed": consumed,
        "rows_sent": sent,
        "redelivered_rows": copies,
        "rows_stored": stored,
        "copies_all_dropped": all(stored[t] == sent[t] - copies[t] for t in sent),
        "deadlettered": stats.deadlettered,
        "json_fallbacks": stats.json_fallbacks,
        "typed_records": stats.typed_records,
        "insert_s": round(insert_s, 2),
        "insert_rows_per_s": round(rows / insert_s),
        "insert_records_per_s": round(consumed / insert_s),
        "insert_cpu_s": round(insert_cpu_s, 2),
        "insert_rows_per_cpu_s": round(rows / insert_cpu_s),
        "load_wall_s": round(time.monotonic() - started, 2),
        "generated_mb_held": round(held_mb),  # record bytes of one chunk, in the peak RSS too
        "path": "Sink.add + write_batch (schema check in Python, JSONEachRow parsed by the engine)"
        + (", sequential" if args.sequential else ", the next batch's check overlapping the insert"),
    }


def rows_to_read(warehouse: Warehouse, sql: str, minutes: int) -> int:
    """ClickHouse's estimate of the rows the query reads after pruning, over all its tables."""
    plan = warehouse.query(f"EXPLAIN ESTIMATE {sql}", parameters={"minutes": minutes})
    return sum(int(row["rows"]) for row in plan)


def time_queries(warehouse: Warehouse, repeats: int) -> dict[str, dict[str, Any]]:
    timings: dict[str, dict[str, Any]] = {}
    for name, query in QUERIES.items():
        for label, minutes in WINDOWS.items():
            samples = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                rows = run_query(warehouse, name, minutes)
                samples.append(time.perf_counter() - t0)
            read = warehouse.read_statistics(query.sql_for(minutes), {"minutes": minutes})
            timings[f"{name}@{label}"] = {
                "median_s": round(statistics.median(samples), 4),
                "max_s": round(max(samples), 4),
                "read_rows": int(read.get("rows_read", 0)),
                "rows_to_read": rows_to_read(warehouse, query.sql_for(minutes), minutes),
                "result_rows": len(rows),
                "reads": "hourly rollups" if query.sql_for(minutes) != query.sql else "minute rollups/raw",
            }
    return timings


def raw_vs_rollup(warehouse: Warehouse) -> dict[str, Any]:
    """Raw tables against the rollups, whole history: they must agree exactly."""
    raw = warehouse.query(
        "SELECT count() AS requests, countIf(status != 'ok') AS errors, round(sum(cost_usd), 4) AS cost"
        " FROM {db}.requests"
    )[0]
    hour = warehouse.query(
        "SELECT sum(t.requests) AS requests, sumIf(t.requests, t.status != 'ok') AS errors,"
        " round(sum(t.cost_usd), 4) AS cost FROM {db}.request_hour AS t"
    )[0]
    events = warehouse.query("SELECT count() AS n, uniqExact(event_id) AS ids FROM {db}.events")[0]
    stage = warehouse.query("SELECT sum(t.events) AS n FROM {db}.stage_hour AS t")[0]
    return {"requests_raw": raw, "requests_hourly": hour, "events_raw": events, "events_hourly": stage["n"]}


def explain_window(warehouse: Warehouse) -> list[str]:
    """How a one-hour window on the raw events prunes partitions and granules."""
    plan = warehouse.query(
        "EXPLAIN indexes = 1 SELECT count() FROM {db}.events"
        " WHERE ts >= now64(3) - toIntervalMinute(60) AND stage = 'infer'"
    )
    return [str(next(iter(row.values()))) for row in plan]


async def dashboard_load(settings: Settings, warehouse: Warehouse, repeats: int) -> dict[str, float]:
    """The web dashboard's data (every series and table) over HTTP from the query server."""
    server = await start_query_server(settings, warehouse)
    try:
        result = {}
        for label in ("1h", "7d"):
            samples = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                await asyncio.to_thread(read_dashboard, settings, WINDOWS[label])
                samples.append(time.perf_counter() - t0)
            result[f"{label}_median_s"] = round(statistics.median(samples), 4)
        return result
    finally:
        await server.stop()


def settle(warehouse: Warehouse, limit_s: float = 120.0) -> float:
    """Wait for background merges to finish (a live warehouse has merged parts)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if not warehouse.query("SELECT count() AS n FROM system.merges")[0]["n"]:
            break
        time.sleep(1.0)
    return round(time.monotonic() - started, 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.path or tempfile.mkdtemp(prefix="sluice-analytics-"))
    settings = Settings(home=root / "home", clickhouse_dsn=f"chdb://{root / 'clickhouse'}")
    warehouse = connect(settings)
    try:
        warehouse.command("DROP DATABASE IF EXISTS {db}")
        migrate(warehouse, default_migrations_dir())
        loaded = load(warehouse, settings, args)
        merge_wait = settle(warehouse)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        timings = time_queries(warehouse, args.repeats)
        board = asyncio.run(dashboard_load(settings, warehouse, args.repeats))
        agree = raw_vs_rollup(warehouse)
        plan = explain_window(warehouse)
        sizes = warehouse.query(
            "SELECT table, sum(rows) AS rows, count() AS parts FROM system.parts"
            " WHERE database = {database:String} AND active GROUP BY table ORDER BY table",
            parameters={"database": warehouse.database},
        )
    finally:
        warehouse.close()
    return {
        "requests": args.requests,
        "settings": {k: v for k, v in vars(args).items() if k != "path"},
        "load": loaded,
        "peak_rss_mb": round(peak_mb),
        "merge_wait_s": merge_wait,
        "queries": timings,
        "web_dashboard": board,
        "raw_vs_rollup": agree,
        "explain_1h_events": plan,
        "table_rows": {str(row["table"]): int(row["rows"]) for row in sizes},
        "loadavg": os.getloadavg(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, shared with other engineers' work while measured",
    }


def _path(load: dict[str, Any]) -> str:
    """How the run inserted: runs before 0008 timed typed column inserts, not the sink's path."""
    if "insert_records_per_s" not in load:
        return "typed column insert (not the sink's path)"
    return f"sink path (schema check + engine-parsed JSON) {load['insert_records_per_s']:,} records/s ="


def _process(load: dict[str, Any]) -> str:
    return "bench process" if "insert_records_per_s" in load else "inserting process"


def _held(load: dict[str, Any]) -> str:
    held = load.get("generated_mb_held")
    return f" ({held:,} MB of it generated records waiting their turn)" if held else ""


def run_key(requests: int, days: float) -> str:
    """Where a run is kept in the results: by size for the standard 7 days, else size@days."""
    return str(requests) if days == 7.0 else f"{requests}@{days:g}d"


def _window_minutes(run: dict[str, Any]) -> float:
    """Minutes of data a 1-hour window held when the queries ran (the newest data was that old)."""
    return max(0.0, 60 - (run["load"]["load_wall_s"] + run["merge_wait_s"]) / 60)


def hour_ratios(runs: dict[str, Any]) -> list[str]:
    """The 1-hour window on a bigger (or busier) warehouse against the 1M-request one: its cost
    should follow the window, not the table."""
    base = runs.get("1000000")
    others = [k for k in ("10000000", run_key(1_000_000, 0.7)) if k in runs and base is not None]
    if not others or base is None:
        return []
    names = {
        "10000000": "10M over 7 days",
        run_key(1_000_000, 0.7): "1M over 0.7 days (the requests per minute of 10M over 7 days)",
    }
    lines = [
        "",
        "One-hour window against 1M requests over 7 days (x = ratio of median time / of rows read):",
        "",
        "| query | " + " | ".join(names[k] for k in others) + " |",
        "|---|" + "---|" * len(others),
    ]
    for name in QUERIES:
        b = base["queries"].get(f"{name}@1h")
        cells = []
        for key in others:
            t = runs[key]["queries"].get(f"{name}@1h")
            if t is None or b is None:
                cells.append("")
                continue
            rows = f"x{t['read_rows'] / b['read_rows']:.2f}" if b["read_rows"] else "0 rows"
            cells.append(f"x{t['median_s'] / b['median_s']:.2f} / {rows}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    windows = [("1M over 7 days", base), *((names[k], runs[k]) for k in others)]
    held = ", ".join(f"{label} {_window_minutes(run):.0f}" for label, run in windows)
    lines += ["", f"Minutes of data the 1-hour window held: {held}."]
    return lines


def table(runs: dict[str, Any]) -> list[str]:
    """query x window, one column group per 7-day size: median ms and rows read; then the
    1-hour ratios."""
    sizes = sorted((k for k in runs if k.isdigit()), key=int)
    head = "| query | " + " | ".join(f"{int(s) / 1e6:g}M {w}" for s in sizes for w in WINDOWS) + " |"
    lines = [head, "|---|" + "---|" * (len(sizes) * len(WINDOWS))]
    for name in QUERIES:
        cells = []
        for size in sizes:
            for w in WINDOWS:
                t = runs[size]["queries"].get(f"{name}@{w}")
                read = t.get("read_rows", t["rows_to_read"]) if t else 0
                cells.append("" if t is None else f"{t['median_s'] * 1000:.0f} ms / {read:,} rows")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for size in sizes:
        r = runs[size]
        load = r["load"]
        lines += [
            "",
            f"{int(size):,} requests: {sum(load['rows_sent'].values()):,} rows sent"
            f" ({sum(load['redelivered_rows'].values()):,} redelivered copies, all dropped:"
            f" {load['copies_all_dropped']}), {_path(load)} {load['insert_rows_per_s']:,} rows/s"
            f" ({load['insert_rows_per_cpu_s']:,} rows per CPU-second, engine threads included)"
            f" with every view on, peak RSS of the {_process(load)} {r['peak_rss_mb']:,} MB{_held(load)};"
            f" web dashboard (all panels) 1h {r['web_dashboard']['1h_median_s']} s,"
            f" 7d {r['web_dashboard']['7d_median_s']} s; load average {r['loadavg'][0]:.1f}"
            f" (15 min: {r['loadavg'][2]:.1f}); the newest data was about"
            f" {(load['load_wall_s'] + r['merge_wait_s']) / 60:.0f} min old when the queries ran"
            " (a 1h window held that much less data)",
        ]
    return lines + hour_ratios(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="requests to load (default 1M)")
    parser.add_argument("--days", type=float, default=7.0, help="time span the requests cover")
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--error-rate", type=float, default=0.03, help="share of failed requests")
    parser.add_argument("--redeliver", type=float, default=0.01, help="share of requests sent twice")
    parser.add_argument(
        "--batch",
        type=int,
        default=Settings().sink_batch_size // len(STAGES),
        help="requests per batch (~5 event records each); default: the sink's batch size in records / 5",
    )
    parser.add_argument(
        "--sequential", action="store_true", help="check, then insert each batch (no overlap; the old loop)"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=12,
        help="batches generated at a time, then timed through the sink; the sink's pipeline drains"
        " once per chunk, which a running sink never does (default 12)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per query and window (median)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--path", help="data directory (default: a new temporary one)")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the .txt from the .json")
    parser.add_argument("--readme", action="store_true", help="also put the table into README.md")
    args = parser.parse_args()
    result = None if args.report_only else run(args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "analytics.json"
    try:  # read after the run: another size may have been written meanwhile
        runs = json.loads(out.read_text()).get("runs", {})
    except (OSError, ValueError):
        runs = {}
    if result is not None:
        runs[run_key(args.requests, args.days)] = result
        out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    lines = table(runs)
    (RESULTS / "analytics.txt").write_text("\n".join(lines) + "\n")
    if args.readme:
        readme = RESULTS.parents[1] / "README.md"
        text = readme.read_text()
        begin, end = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
        readme.write_text(text[:begin] + "\n" + "\n".join(lines) + "\n" + text[end:])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
