"""`sluice dashboard`: the first terminal view of the warehouse (per-model volume, latency
percentiles, cost and error rate, plus errors by code and stage latency)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from sluice.settings import Settings
from sluice.warehouse.connection import WarehouseError
from sluice.warehouse.queries import QUERIES, open_for_reading

PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "dashboard",
        (
            "model",
            "requests",
            "ok",
            "errors",
            "error_rate",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "cost_usd",
            "prompt_tokens",
            "completion_tokens",
        ),
    ),
    ("totals", ("status", "error_code", "requests", "cost_usd")),
    ("stage_latency", ("stage", "model", "events", "errors", "p50_ms", "p95_ms", "p99_ms")),
)


def build_table(name: str, columns: tuple[str, ...], rows: list[dict[str, Any]], minutes: int) -> Table:
    table = Table(title=f"{name} — last {minutes} min", caption=QUERIES[name].doc, caption_justify="left")
    for column in columns:
        table.add_column(
            column, justify="left" if column in {"model", "status", "error_code", "stage"} else "right"
        )
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    if not rows:
        table.add_row(*(["—"] * len(columns)))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6f}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def render_dashboard(settings: Settings, minutes: int = 60, console: Console | None = None) -> int:
    console = console or Console()
    try:
        with open_for_reading(settings) as reader:
            for name, columns in PANELS:
                console.print(build_table(name, columns, reader.rows(name, minutes), minutes))
            console.print(f"[dim]source: {reader.where}[/dim]")
    except WarehouseError as exc:
        console.print(f"[red]cannot read the warehouse: {exc}[/red]")
        return 1
    return 0
