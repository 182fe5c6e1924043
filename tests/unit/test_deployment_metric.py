"""The `deployments` metric: answered calls, failed calls and latency per replica, from the infer
events' attributes, on a real ClickHouse engine (chdb); it reads the deployment rollups of
migration 0009, which must agree with the raw events and count a redelivered event once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas import Event, Stage
from sluice.settings import Settings
from sluice.warehouse.connection import connect
from sluice.warehouse.migrate import default_migrations_dir, load_migrations, migrate
from sluice.warehouse.queries import run_query
from sluice.warehouse.sink import TABLE_COLUMNS, columns_of, event_row, insert_events
from sluice.warehouse.synthetic import synthetic_requests


def infer_event(request_id: str, status: str, attributes: dict[str, str]) -> Event:
    """A minute old by the real clock at call time (the query's window counts back from it; a
    time taken at import falls out of the window when the whole suite runs long)."""
    return Event(
        event_id=f"{request_id}/infer",
        request_id=request_id,
        correlation_id=request_id,
        tenant="acme",
        stage=Stage.INFER,
        status=status,
        ts=datetime.now(UTC) - timedelta(minutes=1),
        duration_ms=10.0,
        model="llama",
        attributes=attributes,
    )


def test_latency_and_errors_per_deployment(tmp_path: Path, chdb_dsn: str) -> None:
    settings = Settings(home=tmp_path, clickhouse_dsn=chdb_dsn, clickhouse_database="sluice_deployments")
    warehouse = connect(settings)
    try:
        warehouse.command("DROP DATABASE IF EXISTS {db}")
        migrate(warehouse, default_migrations_dir())
        events = [
            infer_event("r1", "ok", {"deployment": "fast", "model_latency_ms": "20"}),
            infer_event("r2", "ok", {"deployment": "fast", "model_latency_ms": "40"}),
            infer_event("r5", "ok", {"deployment": "fast", "model_latency_ms": "30"}),
            infer_event(
                "r3", "ok", {"deployment": "slow", "model_latency_ms": "1000", "deployment_errors": "down"}
            ),
            infer_event("r4", "failed", {"deployment": "down", "deployment_errors": "down,down,down"}),
            infer_event("b1", "breaker_open", {"deployment": "down"}),  # a transition, not a call
        ]
        rows = [event_row(e) for e in events]
        warehouse.insert("events", columns_of(rows), TABLE_COLUMNS["events"])
        found = {row["deployment"]: row for row in run_query(warehouse, "deployments", 10)}
    finally:
        warehouse.close()
    assert set(found) == {"fast", "slow", "down"}
    assert (found["fast"]["answered"], found["fast"]["failed_calls"]) == (3, 0)
    assert found["fast"]["p50_ms"] == 30.0
    assert found["slow"]["p50_ms"] == 1000.0
    assert (found["down"]["answered"], found["down"]["failed_calls"], found["down"]["error_rate"]) == (
        0,
        4,
        1.0,
    )
    assert found["down"]["p50_ms"] is None  # nothing answered there


RAW_DEPLOYMENTS = """
SELECT model, deployment, sum(ok_call) AS answered, sum(failed_call) AS failed_calls,
    quantilesTDigestIf(0.5, 0.95, 0.99)(latency_ms, ok_call = 1) AS latency
FROM
(
    SELECT model, attributes['deployment'] AS deployment, toUInt8(status = 'ok') AS ok_call,
        toUInt8(0) AS failed_call, toFloat64OrZero(attributes['model_latency_ms']) AS latency_ms
    FROM {db}.events
    WHERE stage = 'infer' AND status NOT LIKE 'breaker_%' AND attributes['deployment'] != ''
    UNION ALL
    SELECT model, arrayJoin(splitByChar(',', attributes['deployment_errors'])) AS deployment,
        toUInt8(0) AS ok_call, toUInt8(1) AS failed_call, toFloat64(0) AS latency_ms
    FROM {db}.events
    WHERE stage = 'infer' AND attributes['deployment_errors'] != ''
)
GROUP BY model, deployment
ORDER BY model, deployment
"""


def rolled(grain: str) -> str:
    return f"""
SELECT t.model AS model, t.deployment AS deployment, sum(t.answered) AS answered,
    sum(t.failed_calls) AS failed_calls, quantilesTDigestMerge(0.5, 0.95, 0.99)(t.latency_ms) AS latency
FROM {{db}}.deployment_{grain} AS t
GROUP BY model, deployment
ORDER BY model, deployment
"""


def test_rollups_agree_with_raw_events_and_ignore_redelivered_copies(tmp_path: Path, chdb_dsn: str) -> None:
    """Synthetic traffic through the sink's JSON path, a tenth of it sent twice in later inserts:
    the minute and hour rollups hold the raw events' exact counts (and, with few calls per
    bucket, the same latency quantiles), and the metric's figures are those of a load without
    copies."""
    requests = list(synthetic_requests(300, spread_minutes=50, ago_minutes=2))
    lines = [[event.model_dump_json().encode() for event in request] for request in requests]
    copies = [line for n, request in enumerate(lines) if n % 10 == 0 for line in request]
    figures = []
    for name, sent in (("sluice_deploy_once", []), ("sluice_deploy_copies", copies)):
        settings = Settings(home=tmp_path / name, clickhouse_dsn=chdb_dsn, clickhouse_database=name)
        warehouse = connect(settings)
        try:
            warehouse.command("DROP DATABASE IF EXISTS {db}")
            migrate(warehouse, default_migrations_dir())
            for first in range(0, len(lines), 100):
                insert_events(warehouse, [line for request in lines[first : first + 100] for line in request])
            if sent:
                insert_events(warehouse, sent)
            raw = warehouse.query(RAW_DEPLOYMENTS)
            assert raw and sum(row["failed_calls"] for row in raw) > 0
            for grain in ("minute", "hour"):
                assert warehouse.query(rolled(grain)) == raw, grain
            figures.append(run_query(warehouse, "deployments", 60))
            assert figures[-1] == run_query(warehouse, "deployments", 24 * 60)
        finally:
            warehouse.close()
    assert figures[0] == figures[1]
    assert sum(row["answered"] for row in figures[0]) == sum(1 for r in requests if r[-1].status == "ok")


def test_migration_0009_fills_the_rollups_from_stored_events(tmp_path: Path, chdb_dsn: str) -> None:
    """A warehouse at 0008 already holding infer events: 0009 backfills both rollups."""
    settings = Settings(home=tmp_path, clickhouse_dsn=chdb_dsn, clickhouse_database="sluice_deploy_0009")
    old = tmp_path / "to8"
    old.mkdir()
    for migration in load_migrations(default_migrations_dir()):
        if migration.version <= 8:
            (old / migration.path.name).write_text(migration.sql)
    warehouse = connect(settings)
    try:
        warehouse.command("DROP DATABASE IF EXISTS {db}")
        migrate(warehouse, old)
        events = [e for request in synthetic_requests(50, spread_minutes=90, ago_minutes=1) for e in request]
        insert_events(warehouse, [event.model_dump_json().encode() for event in events])
        to9 = tmp_path / "to9"
        to9.mkdir()
        for migration in load_migrations(default_migrations_dir()):
            if migration.version <= 9:
                (to9 / migration.path.name).write_text(migration.sql)
        assert [m.version for m in migrate(warehouse, to9)] == [9]
        raw = warehouse.query(RAW_DEPLOYMENTS)
        assert raw
        assert warehouse.query(rolled("minute")) == raw
        assert warehouse.query(rolled("hour")) == raw
    finally:
        warehouse.close()
