"""The Grafana dashboard of the compose stack, generated from `sluice/warehouse/metrics.py`
(the SQL the built-in dashboard and `sluice dashboard` run) plus Prometheus panels for the
processes. `python -m sluice.observability.grafana` rewrites infra/grafana/dashboards/sluice.json;
a test fails when the committed file differs from what this module generates.

The metric SQL is written for the query server: `{db}` for the database and the bound window
`{minutes:UInt32}`. In Grafana the ClickHouse plugin fills `$__fromTime` / `$__toTime` with the
dashboard's range, so the window becomes the range's length in minutes (queries end at now())."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice.warehouse.metrics import FEEDBACK_SERIES, METRIC_QUERIES, TIMESERIES
from sluice.warehouse.named import NamedQuery

CLICKHOUSE = {"type": "grafana-clickhouse-datasource", "uid": "sluice-clickhouse"}
PROMETHEUS = {"type": "prometheus", "uid": "sluice-prometheus"}
DATABASE = "sluice"
WINDOW_MINUTES = "toUInt32(greatest(1, dateDiff('minute', $__fromTime, $__toTime)))"
DASHBOARD_PATH = Path("infra/grafana/dashboards/sluice.json")
TIME_SERIES_QUERIES = (TIMESERIES, FEEDBACK_SERIES)
FORMAT_TIME_SERIES, FORMAT_TABLE = 0, 1  # the ClickHouse plugin's `format` values


@dataclass(frozen=True)
class PromPanel:
    """A Prometheus panel: process health and throughput across every Sluice process."""

    title: str
    expr: str
    legend: str
    unit: str = "short"


SLUICE_JOBS = '{job=~"sluice-.*"}'
PROMETHEUS_PANELS: tuple[PromPanel, ...] = (
    PromPanel(
        "Requests answered per second, by status",
        "sum by (status) (rate(sluice_requests_total[1m]))",
        "{{status}}",
        "reqps",
    ),
    PromPanel(
        "Gateway HTTP requests per second, by path and status",
        "sum by (path, status) (rate(sluice_http_requests_total[1m]))",
        "{{path}} {{status}}",
        "reqps",
    ),
    PromPanel(
        "Gateway HTTP latency p95 (seconds)",
        "histogram_quantile(0.95, sum by (le, path) (rate(sluice_http_request_duration_seconds_bucket[5m])))",
        "{{path}}",
        "s",
    ),
    PromPanel(
        "Stage time p95 (seconds)",
        "histogram_quantile(0.95, sum by (le, stage) (rate(sluice_stage_duration_seconds_bucket[5m])))",
        "{{stage}}",
        "s",
    ),
    PromPanel(
        "Consumer lag (messages not yet processed), by group and topic",
        "max by (group, topic) (sluice_consumer_lag)",
        "{{group}} {{topic}}",
    ),
    PromPanel(
        "Sink rows inserted per second, by table",
        "sum by (table) (rate(sluice_sink_rows_total[1m]))",
        "{{table}}",
        "rowsps",
    ),
    PromPanel(
        "CPU per process (cores)", f"rate(process_cpu_seconds_total{SLUICE_JOBS}[1m])", "{{job}} {{instance}}"
    ),
    PromPanel(
        "Resident memory per process",
        f"process_resident_memory_bytes{SLUICE_JOBS}",
        "{{job}} {{instance}}",
        "bytes",
    ),
    PromPanel("Processes up (scraped)", f"sum by (job) (up{SLUICE_JOBS})", "{{job}}"),
    PromPanel("Alert rules firing", "max by (rule) (sluice_alerts_firing)", "{{rule}}"),
    PromPanel(
        "Circuit breakers (0 closed, 1 half-open, 2 open)",
        "max by (model) (sluice_breaker_state)",
        "{{model}}",
    ),
)


def grafana_sql(query: NamedQuery, database: str = DATABASE) -> str:
    """The query as the Grafana panel runs it: database named, window from the time range."""
    return query.sql.strip().replace("{db}", f"`{database}`").replace("{minutes:UInt32}", WINDOW_MINUTES)


def expand_macros(sql: str, start_epoch_s: int, end_epoch_s: int) -> str:
    """What the ClickHouse plugin sends for the macros the generated SQL uses (for tests)."""
    return sql.replace("$__fromTime", f"toDateTime({start_epoch_s})").replace(
        "$__toTime", f"toDateTime({end_epoch_s})"
    )


def _title(query: NamedQuery) -> str:
    return query.name.replace("_", " ").capitalize()


def _clickhouse_panel(query: NamedQuery, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    series = query in TIME_SERIES_QUERIES
    return {
        "id": panel_id,
        "type": "timeseries" if series else "table",
        "title": _title(query),
        "description": query.doc,
        "datasource": CLICKHOUSE,
        "gridPos": grid,
        "targets": [
            {
                "refId": "A",
                "datasource": CLICKHOUSE,
                "editorType": "sql",
                "queryType": "sql",
                "format": FORMAT_TIME_SERIES if series else FORMAT_TABLE,
                "rawSql": grafana_sql(query),
            }
        ],
    }


def _grid(index: int, top: int) -> dict[str, int]:
    """Two panels per row, 8 units high, from `top` down."""
    return {"h": 8, "w": 12, "x": 12 * (index % 2), "y": top + 8 * (index // 2)}


def _prometheus_panel(panel: PromPanel, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "datasource": PROMETHEUS,
        "gridPos": grid,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [
            {"refId": "A", "datasource": PROMETHEUS, "expr": panel.expr, "legendFormat": panel.legend}
        ],
    }


def _row(title: str, panel_id: int, y: int) -> dict[str, Any]:
    grid = {"h": 1, "w": 24, "x": 0, "y": y}
    return {"id": panel_id, "type": "row", "title": title, "collapsed": False, "gridPos": grid, "panels": []}


def dashboard() -> dict[str, Any]:
    """The whole dashboard: ClickHouse analytics (every metric query), then process metrics."""
    panels: list[dict[str, Any]] = []
    y = 0
    panels.append(_row("Analytics from ClickHouse (sluice/warehouse/metrics.py)", 1, y))
    y += 1
    for index, query in enumerate(METRIC_QUERIES):
        panels.append(_clickhouse_panel(query, 100 + index, _grid(index, y)))
    y += 8 * ((len(METRIC_QUERIES) + 1) // 2)
    panels.append(_row("Processes from Prometheus (GET /metrics of every process)", 2, y))
    y += 1
    for index, panel in enumerate(PROMETHEUS_PANELS):
        panels.append(_prometheus_panel(panel, 200 + index, _grid(index, y)))
    return {
        "uid": "sluice",
        "title": "Sluice",
        "description": "Generated by python -m sluice.observability.grafana; do not edit by hand.",
        "tags": ["sluice"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DASHBOARD_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
