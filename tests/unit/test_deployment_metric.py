"""The `deployments` metric: answered calls, failed calls and latency per replica, read from
the infer events' attributes on a real ClickHouse engine (chdb)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas import Event, Stage
from sluice.settings import Settings
from sluice.warehouse.connection import connect
from sluice.warehouse.migrate import default_migrations_dir, migrate
from sluice.warehouse.queries import run_query
from sluice.warehouse.sink import TABLE_COLUMNS, columns_of, event_row


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
    assert (found["fast"]["answered"], found["fast"]["failed_calls"]) == (2, 0)
    assert found["fast"]["p50_ms"] == 30.0
    assert found["slow"]["p50_ms"] == 1000.0
    assert (found["down"]["answered"], found["down"]["failed_calls"], found["down"]["error_rate"]) == (
        0,
        4,
        1.0,
    )
    assert found["down"]["p50_ms"] is None  # nothing answered there
