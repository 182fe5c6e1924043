"""The sink's event path on the real engine: records checked against the schema in Python, then
parsed by ClickHouse as JSONEachRow (migrations 0008 and 0011). It stores exactly what the typed
insert stores, dead-letters malformed records with their reason, sends records the schema accepts
only by converting a value through the typed insert, and falls back to the typed insert when the
engine refuses a block the schema accepts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from schemas import Event
from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse, connect
from sluice.warehouse.migrate import default_migrations_dir, migrate
from sluice.warehouse.sink import (
    Batch,
    Sink,
    SinkRecord,
    SinkStats,
    event_row,
    insert_rows,
    request_row,
    write_batch,
)
from sluice.warehouse.synthetic import synthetic_requests

EVENT_COLUMNS = "* EXCEPT inserted_at"


@pytest.fixture()
def warehouses(
    tmp_path_factory: pytest.TempPathFactory, chdb_dsn: str
) -> Iterator[tuple[Warehouse, Warehouse]]:
    """Two fresh databases on the shared engine: one for the typed insert, one for the sink's path."""
    opened = []
    for name in ("sluice_typed", "sluice_json"):
        settings = Settings(
            home=tmp_path_factory.mktemp(name), clickhouse_dsn=chdb_dsn, clickhouse_database=name
        )
        warehouse = connect(settings)
        warehouse.command("DROP DATABASE IF EXISTS {db}")
        migrate(warehouse, default_migrations_dir())
        opened.append(warehouse)
    yield opened[0], opened[1]
    for warehouse in opened:
        warehouse.close()


def sink_for(warehouse: Warehouse) -> tuple[Sink, SinkStats]:
    stats = SinkStats()
    return Sink(Settings(), warehouse, stats, asyncio.Event()), stats


def through_sink(warehouse: Warehouse, values: list[bytes | None]) -> tuple[Batch, SinkStats]:
    """Event records through Sink.add and write_batch, as the sink handles a consumed batch."""
    sink, stats = sink_for(warehouse)
    batch = Batch()
    for offset, value in enumerate(values):
        sink.add(batch, SinkRecord(sink.events_topic, 0, offset, value, 0))
    write_batch(warehouse, batch, stats)
    return batch, stats


def stored(warehouse: Warehouse) -> dict[str, list[dict[str, Any]]]:
    return {
        "events": warehouse.query(f"SELECT {EVENT_COLUMNS} FROM {{db}}.events ORDER BY event_id"),
        "requests": warehouse.query(f"SELECT {EVENT_COLUMNS} FROM {{db}}.requests ORDER BY request_id"),
    }


def test_json_path_stores_what_the_typed_insert_stores(warehouses: tuple[Warehouse, Warehouse]) -> None:
    typed, engine = warehouses
    events = [event for request in synthetic_requests(60, spread_minutes=120) for event in request]
    insert_rows(typed, "events", [event_row(e) for e in events])
    insert_rows(typed, "requests", [row for e in events if (row := request_row(e)) is not None])
    _, stats = through_sink(engine, [e.model_dump_json().encode() for e in events])
    assert stats.json_fallbacks == 0 and stats.typed_records == 0  # the pipeline's records pass strict
    assert stats.rows_inserted["events"] == len(events) and stats.rows_inserted["requests"] == 60
    assert stored(engine) == stored(typed)


def test_malformed_records_are_deadlettered_with_their_reason(
    warehouses: tuple[Warehouse, Warehouse],
) -> None:
    _, engine = warehouses
    good = [e for request in synthetic_requests(2) for e in request]
    sample = orjson.loads(good[0].model_dump_json())
    final = orjson.loads(next(e for e in good if e.summary is not None).model_dump_json())
    summary = final["summary"]
    bad: list[bytes | None] = [
        b"not json at all",
        None,
        orjson.dumps({**sample, "event_id": "extra", "surprise": 1}),  # unknown field
        orjson.dumps({**sample, "event_id": "stage", "stage": "teleport"}),
        orjson.dumps({k: v for k, v in sample.items() if k != "tenant"}),
        b'{"event_id": "truncated", "request_id": ',
        orjson.dumps({**final, "event_id": "number", "summary": {**summary, "latency_ms": "fast"}}),
        orjson.dumps({**final, "event_id": "flag", "summary": {**summary, "hallucination": "maybe"}}),
    ]
    values = [e.model_dump_json().encode() for e in good]
    batch, stats = through_sink(engine, [*values[:3], *bad, *values[3:]])
    reasons = [letter.reason for letter in batch.to_deadletter]
    assert len(reasons) == len(bad) and all(reason.startswith("unparseable Event") for reason in reasons)
    assert "empty record value" in reasons[1] and "surprise" in reasons[2] and "tenant" in reasons[4]
    assert "latency_ms" in reasons[6] and "hallucination" in reasons[7]
    assert [letter.offset for letter in batch.to_deadletter] == [3, 4, 5, 6, 7, 8, 9, 10]
    assert stats.json_fallbacks == 0
    count = engine.query("SELECT count() AS n, uniqExact(event_id) AS ids FROM {db}.events")[0]
    assert count == {"n": len(good), "ids": len(good)}


def test_values_the_schema_converts_go_in_typed(warehouses: tuple[Warehouse, Warehouse]) -> None:
    """The schema takes a time as epoch seconds, a number as text and a boolean as 0/1 (lax mode);
    the sink sends such records through the typed insert, never to the engine's JSON parser, so
    the engine needs no type checks of its own: nothing lost, nothing doubled, same values."""
    typed, engine = warehouses
    events = [e for request in synthetic_requests(3, spread_minutes=10, error_rate=0.0) for e in request]
    values = [e.model_dump_json().encode() for e in events]
    finals = [i for i, e in enumerate(events) if e.summary is not None]
    odd = orjson.loads(values[finals[0]])
    odd["ts"] = events[finals[0]].ts.timestamp()
    odd["summary"]["latency_ms"] = str(odd["summary"]["latency_ms"])
    values[finals[0]] = orjson.dumps(odd)
    flag = orjson.loads(values[finals[1]])
    flag["summary"]["hallucination"] = int(flag["summary"]["hallucination"])
    values[finals[1]] = orjson.dumps(flag)
    for i in finals[:2]:
        assert Event.model_validate_json(values[i]) == events[i]

    insert_rows(typed, "events", [event_row(e) for e in events])
    insert_rows(typed, "requests", [row for e in events if (row := request_row(e)) is not None])
    batch, stats = through_sink(engine, values)
    assert not batch.to_deadletter
    assert stats.typed_records == 2 and stats.json_fallbacks == 0
    assert stats.rows_inserted["events"] == len(events) and stats.rows_inserted["requests"] == 3
    assert stored(engine) == stored(typed)
    _, again = through_sink(engine, values)  # redelivered: the typed path deduplicates too
    assert again.typed_records == 2 and stored(engine) == stored(typed)


def test_engine_refusal_falls_back_to_the_typed_insert(warehouses: tuple[Warehouse, Warehouse]) -> None:
    """A time written as epoch seconds in text passes the strict schema check, but the engine's
    view refuses it rather than guess seconds or milliseconds; the batch goes in typed."""
    typed, engine = warehouses
    events = [e for request in synthetic_requests(3, spread_minutes=10) for e in request]
    values = [e.model_dump_json().encode() for e in events]
    final = next(i for i, e in enumerate(events) if e.summary is not None)
    odd = orjson.loads(values[final])
    odd["ts"] = str(events[final].ts.timestamp())
    values[final] = orjson.dumps(odd)
    assert Event.model_validate_json(values[final], strict=True) == events[final]

    insert_rows(typed, "events", [event_row(e) for e in events])
    insert_rows(typed, "requests", [row for e in events if (row := request_row(e)) is not None])
    batch, stats = through_sink(engine, values)
    assert not batch.to_deadletter
    assert stats.json_fallbacks == 1 and stats.typed_records == 0
    assert stored(engine) == stored(typed)
    _, again = through_sink(engine, values)  # redelivered: the fallback deduplicates too
    assert again.json_fallbacks == 1 and stored(engine) == stored(typed)


def test_redelivered_records_are_stored_once(warehouses: tuple[Warehouse, Warehouse]) -> None:
    _, engine = warehouses
    values = [e.model_dump_json().encode() for request in synthetic_requests(20) for e in request]
    through_sink(engine, values)
    through_sink(engine, values[::3] + values[:5])  # copies, some twice in one batch
    counts = engine.query("SELECT count() AS n FROM {db}.events")[0]["n"]
    assert counts == len(values)
    minute = engine.query("SELECT sum(t.requests) AS n FROM {db}.request_minute AS t")[0]["n"]
    assert minute == 20


def test_other_shapes_of_valid_json_mean_the_same(warehouses: tuple[Warehouse, Warehouse]) -> None:
    """Producers other than pydantic may pretty-print, reorder fields, leave defaults out or escape
    text: the engine reads them as the schema does, without falling back."""
    typed, engine = warehouses
    events = [e for request in synthetic_requests(4, spread_minutes=10) for e in request]
    events[0].tenant = "ünïcode-tenant"
    values = []
    for n, event in enumerate(events):
        fields = orjson.loads(event.model_dump_json())
        if n % 3 == 0:
            fields = {k: v for k, v in fields.items() if v not in (None, 0, 0.0, False, [], {})}
        if n % 3 == 1:
            fields = dict(reversed(list(fields.items())))
        values.append(json.dumps(fields, indent=2 if n % 2 else None, ensure_ascii=True).encode())
    insert_rows(typed, "events", [event_row(e) for e in events])
    insert_rows(typed, "requests", [row for e in events if (row := request_row(e)) is not None])
    _, stats = through_sink(engine, values)
    assert stats.json_fallbacks == 0 and stats.typed_records == 0
    assert stored(engine) == stored(typed)
