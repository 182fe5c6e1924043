"""`sluice dashboard`: the warehouse in the terminal. Sparklines of the per-minute series
(volume, errors, latency, cost, cache, quality) and tables of the rollup metrics, for a time
range (`--range 15m|1h|6h|1d` or `--minutes N`)."""

from __future__ import annotations

import math
import re
from typing import Any

from rich.console import Console
from rich.table import Table

from sluice.settings import Settings
from sluice.warehouse.connection import WarehouseError
from sluice.warehouse.named import HOURLY_FROM_MINUTES
from sluice.warehouse.queries import QUERIES, Reader, open_for_reading

BARS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60
SPARKS: tuple[tuple[str, str], ...] = (
    ("requests", "requests / min"),
    ("error_rate", "error rate"),
    ("p95_ms", "p95 latency ms"),
    ("cost_usd", "cost USD / min"),
    ("cache_hits", "cache hits / min"),
    ("savings_usd", "savings USD / min"),
    ("hallucination_rate", "hallucination rate"),
)
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "models",
        (
            "model",
            "requests",
            "errors",
            "error_rate",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "cost_usd",
            "cost_per_request",
            "cache_hit_rate",
            "hallucination_rate",
        ),
    ),
    ("latency_by_stage", ("stage", "model", "events", "errors", "p50_ms", "p95_ms", "p99_ms")),
    ("errors_by_category", ("category", "error_code", "requests", "rate")),
    ("cost_per_1k", ("model", "requests", "tokens", "cost_usd", "cost_per_1k_tokens", "ladder_usd")),
    ("token_utilisation", ("model", "avg_prompt_tokens", "avg_completion_tokens", "completion_share")),
    ("cache", ("model", "cache_hits", "hit_rate", "cache_savings_usd", "routing_savings_usd")),
    ("top_routes", ("route", "requests", "cost_usd", "cost_per_request")),
    ("validity", ("model", "reviewed", "invalid", "validity_rate", "schema_valid_rate")),
    ("hallucination", ("model", "checked", "hallucinations", "hallucination_rate", "avg_groundedness")),
    ("consistency", ("model", "repeated_questions", "divergent", "consistency_rate")),
    ("satisfaction", ("model", "route", "ratings", "mean_rating", "negative_share")),
    ("deployments", ("model", "deployment", "answered", "failed_calls", "error_rate", "p50_ms", "p95_ms")),
)
TEXT_COLUMNS = {"model", "status", "error_code", "stage", "category", "route", "label", "deployment"}
RANGE = re.compile(r"^(\d+)([mhd])$")


def parse_range(text: str) -> int:
    """'15m', '2h', '1d' -> minutes."""
    match = RANGE.match(text.strip())
    if match is None:
        raise ValueError(f"range must look like 15m, 2h or 1d, not {text!r}")
    return int(match[1]) * {"m": 1, "h": 60, "d": 1440}[match[2]]


def sparkline(values: list[float | None], width: int = SPARK_WIDTH) -> str:
    """Values as block characters, bucketed (max per bucket) to at most `width`; gaps are spaces."""
    if len(values) > width:
        size = math.ceil(len(values) / width)
        buckets = [values[i : i + size] for i in range(0, len(values), size)]
        values = [max((v for v in bucket if v is not None), default=None) for bucket in buckets]
    present = [v for v in values if v is not None]
    if not present:
        return " " * len(values)
    low, high = min(present), max(present)
    span = high - low or 1.0
    return "".join(" " if v is None else BARS[int((v - low) / span * (len(BARS) - 1))] for v in values)


def spark_table(rows: list[dict[str, Any]], minutes: int) -> Table:
    hourly = minutes >= HOURLY_FROM_MINUTES  # the series come per hour then
    table = Table(title=f"last {minutes} min, per {'hour' if hourly else 'minute'}", show_header=True)
    table.add_column("series", justify="left")
    table.add_column("trend", justify="left", no_wrap=True)
    table.add_column("max", justify="right")
    table.add_column("total / mean", justify="right")
    for key, label in SPARKS:
        values = [_value(row, key) for row in rows]
        present = [v for v in values if v is not None]
        summary = (
            sum(present)
            if key in {"requests", "cost_usd", "cache_hits", "savings_usd"}
            else (sum(present) / len(present) if present else None)
        )
        label = label.replace("/ min", "/ hour") if hourly else label
        table.add_row(label, sparkline(values), _cell(max(present, default=None)), _cell(summary))
    return table


def _value(row: dict[str, Any], key: str) -> float | None:
    """A minute without requests has no rate or latency (a gap, not a zero)."""
    if key not in {"requests", "cost_usd", "cache_hits", "savings_usd"} and not row.get("requests"):
        return None
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else None


def build_table(name: str, columns: tuple[str, ...], rows: list[dict[str, Any]], minutes: int) -> Table:
    table = Table(title=f"{name} — last {minutes} min", caption=QUERIES[name].doc, caption_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in TEXT_COLUMNS else "right")
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


def render(reader: Reader, console: Console, minutes: int) -> None:
    console.print(spark_table(reader.rows("timeseries", minutes), minutes))
    for name, columns in PANELS:
        console.print(build_table(name, columns, reader.rows(name, minutes), minutes))
    console.print(f"[dim]source: {reader.where}[/dim]")


def render_dashboard(settings: Settings, minutes: int = 60, console: Console | None = None) -> int:
    console = console or Console()
    try:
        with open_for_reading(settings) as reader:
            render(reader, console, minutes)
    except WarehouseError as exc:
        console.print(f"[red]cannot read the warehouse: {exc}[/red]")
        return 1
    return 0
