"""The compose stack's Grafana dashboard: generated from sluice/warehouse/metrics.py (the
committed file cannot drift), and every ClickHouse panel's SQL, with the macros Grafana's
ClickHouse plugin fills in, runs on the real ClickHouse engine over pipeline events and returns rows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import Event, Feedback, Stage
from sluice.observability.grafana import CLICKHOUSE, DASHBOARD_PATH, PROMETHEUS, expand_macros, render
from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse, connect
from sluice.warehouse.metrics import METRIC_QUERIES
from sluice.warehouse.migrate import default_migrations_dir, migrate
from sluice.warehouse.sink import TABLE_COLUMNS, columns_of, event_row, feedback_row, request_row
from sluice.warehouse.synthetic import synthetic_requests

ROOT = Path(__file__).resolve().parents[2]


def committed() -> dict[str, object]:
    return json.loads((ROOT / DASHBOARD_PATH).read_text(encoding="utf-8"))


def clickhouse_targets() -> list[tuple[str, str]]:
    panels = [p for p in committed()["panels"] if p.get("datasource") == CLICKHOUSE]  # type: ignore[union-attr]
    return [(panel["title"], panel["targets"][0]["rawSql"]) for panel in panels]


def test_committed_dashboard_is_the_generated_one() -> None:
    assert (ROOT / DASHBOARD_PATH).read_text(encoding="utf-8") == render(), (
        "regenerate it: python -m sluice.observability.grafana"
    )


def test_every_metric_query_has_a_panel_and_processes_have_prometheus_panels() -> None:
    assert len(clickhouse_targets()) == len(METRIC_QUERIES)
    prometheus = [p for p in committed()["panels"] if p.get("datasource") == PROMETHEUS]  # type: ignore[union-attr]
    exprs = " ".join(p["targets"][0]["expr"] for p in prometheus)
    for metric in ("sluice_consumer_lag", "process_cpu_seconds_total", "sluice_http_requests_total", "up{"):
        assert metric in exprs


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory, chdb_dsn: str) -> Iterator[Warehouse]:
    """Pipeline events as the stages emit them, stored by the sink's own row mapping."""
    settings = Settings(
        home=tmp_path_factory.mktemp("home"), clickhouse_dsn=chdb_dsn, clickhouse_database="sluice_grafana"
    )
    store = connect(settings)
    store.command("DROP DATABASE IF EXISTS {db}")
    migrate(store, default_migrations_dir())
    events = [event for request in synthetic_requests(400, spread_minutes=30) for event in request]
    now = datetime.now(UTC)
    events.append(
        Event(
            event_id="breaker/sim-large/open",
            request_id="breaker/sim-large/breaker_open/1",
            correlation_id="breaker/sim-large/breaker_open/1",
            tenant="_system",
            stage=Stage.INFER,
            status="breaker_open",
            ts=now - timedelta(minutes=3),
            model="sim-large",
        )
    )
    finals = [e for e in events if e.summary is not None]
    store.insert("events", columns_of([event_row(e) for e in events]), TABLE_COLUMNS["events"])
    requests = [row for e in finals if (row := request_row(e)) is not None]
    store.insert("requests", columns_of(requests), TABLE_COLUMNS["requests"])
    ratings = [
        feedback_row(
            Feedback(request_id=e.request_id, tenant=e.tenant, rating=(1, -1, 0)[n % 3], label="good"),  # type: ignore[arg-type]
            0,
            n,
            now,
        )
        for n, e in enumerate(finals[:60])
    ]
    store.insert("feedback", columns_of(ratings), TABLE_COLUMNS["feedback"])
    yield store
    store.close()


@pytest.mark.parametrize(("title", "sql"), clickhouse_targets())
def test_every_clickhouse_panel_runs_and_returns_rows(warehouse: Warehouse, title: str, sql: str) -> None:
    end = int(time.time())
    ready = expand_macros(sql, end - 3600, end).replace("`sluice`.", f"`{warehouse.database}`.")
    assert "$__" not in ready, "every macro the panel uses is one Grafana's ClickHouse plugin fills in"
    rows = warehouse.query(ready)
    assert rows, f"panel {title!r} returned no rows"
