"""Named queries on hand-inserted rows: the numbers are right even with duplicate copies."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas import DeadLetter, ErrorCode, Event, Feedback, RequestSummary, Stage, Status
from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse, connect
from sluice.warehouse.migrate import default_migrations_dir, migrate
from sluice.warehouse.queries import (
    QUERIES,
    DirectReader,
    SinkReader,
    UnknownQuery,
    open_for_reading,
    run_query,
    sink_file,
)
from sluice.warehouse.query_server import build_app, start_query_server
from sluice.warehouse.sink import (
    Row,
    deadletter_row,
    event_row,
    feedback_row,
    insert_rows,
    request_row,
)
from sluice.warehouse.web import SERIES, TABLES, read_dashboard

NOW = datetime.now(UTC)


def final_event(
    request_id: str,
    model: str | None,
    latency_ms: float,
    status: Status = Status.OK,
    error: ErrorCode | None = None,
    minutes_ago: float = 5,
    cost: float = 0.01,
    stage: Stage = Stage.VALIDATE_RESPONSE,
    groundedness: float | None = None,
) -> Event:
    finished = NOW - timedelta(minutes=minutes_ago)
    return Event(
        event_id=f"{request_id}-{stage.value}",
        request_id=request_id,
        correlation_id=f"c-{request_id}",
        tenant="acme",
        stage=stage,
        status=status.value,
        ts=finished,
        duration_ms=5.0,
        model=model,
        prompt_tokens=10,
        completion_tokens=20,
        cost_usd=cost,
        error_code=error,
        summary=RequestSummary(
            received_at=finished - timedelta(milliseconds=latency_ms),
            finished_at=finished,
            status=status,
            latency_ms=latency_ms,
            groundedness=groundedness,
            hallucination=None if groundedness is None else groundedness < 0.5,
        ),
    )


def stage_event(request_id: str, stage: Stage, duration_ms: float, model: str = "a") -> Event:
    return Event(
        event_id=f"{request_id}-{stage.value}",
        request_id=request_id,
        correlation_id=f"c-{request_id}",
        tenant="acme",
        stage=stage,
        status="ok",
        ts=NOW - timedelta(minutes=1),
        duration_ms=duration_ms,
        model=model,
    )


def insert(warehouse: Warehouse, table: str, rows: list[Row]) -> None:
    insert_rows(warehouse, table, rows)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, chdb_dsn: str) -> Iterator[Warehouse]:
    """One database with every table filled, each row inserted twice (plus re-processed copies)."""
    settings = Settings(
        home=tmp_path_factory.mktemp("home"), clickhouse_dsn=chdb_dsn, clickhouse_database="sluice_queries"
    )
    warehouse = connect(settings)
    warehouse.command("DROP DATABASE IF EXISTS {db}")
    migrate(warehouse, default_migrations_dir())
    finals = [
        final_event("r1", "a", 100, groundedness=0.9),
        final_event("r2", "a", 200, groundedness=0.3),
        final_event("r3", "a", 300),
        final_event("r4", "b", 50),
        final_event("r5", "b", 60, Status.FAILED, ErrorCode.TIMEOUT, stage=Stage.INFER),
        final_event(
            "r6", None, 1, Status.REJECTED, ErrorCode.INVALID_REQUEST, cost=0.0, stage=Stage.VALIDATE
        ),
        final_event("old", "a", 999, minutes_ago=120),
    ]
    # r3 re-processed later: a newer copy with another ts must replace, not add.
    reprocessed = final_event("r3", "a", 300, minutes_ago=4)
    stages = [
        stage_event("r1", Stage.INFER, 100),
        stage_event("r2", Stage.INFER, 300),
        stage_event("r1", Stage.VALIDATE, 2, model=""),
        stage_event("r2", Stage.VALIDATE, 4, model=""),
        stage_event("r1", Stage.ROUTE, 1),
    ]
    for _ in range(2):  # every row delivered twice
        insert(warehouse, "events", [event_row(e) for e in [*finals, *stages]])
        insert(warehouse, "requests", [row for e in finals if (row := request_row(e)) is not None])
        insert(
            warehouse,
            "feedback",
            [
                feedback_row(Feedback(request_id="r1", tenant="acme", rating=1, label="good"), 0, 1, NOW),
                feedback_row(
                    Feedback(request_id="r2", tenant="acme", rating=-1, label="hallucination"), 0, 2, NOW
                ),
                feedback_row(
                    Feedback(request_id="r3", tenant="acme", rating=-1, label="hallucination"), 1, 1, NOW
                ),
            ],
        )
        letter = DeadLetter(
            reason="not JSON",
            raw_base64="eA==",
            source_topic="t.requests",
            partition=0,
            offset=3,
            stage="validate",
            ts=NOW,
        )
        insert(warehouse, "deadletters", [deadletter_row(letter)])
    insert(warehouse, "events", [event_row(reprocessed)])
    insert(warehouse, "requests", [row for row in [request_row(reprocessed)] if row])
    yield warehouse
    warehouse.close()


def by(rows: list[dict[str, object]], *keys: str) -> dict[object, dict[str, object]]:
    return {(row[keys[0]] if len(keys) == 1 else tuple(row[k] for k in keys)): row for row in rows}


def test_raw_tables_store_one_copy_of_each_redelivered_row(loaded: Warehouse) -> None:
    counts = {
        table: loaded.query(f"SELECT count() AS n, uniqExact({key}) AS keys FROM {{db}}.{table}")[0]
        for table, key in (("requests", "request_id"), ("events", "event_id"), ("feedback", "feedback_id"))
    }
    assert counts["requests"] == {"n": 7, "keys": 7}  # 15 rows sent: everything twice, r3 three times
    assert counts["events"] == {"n": 12, "keys": 12}
    assert counts["feedback"] == {"n": 3, "keys": 3}


def test_dashboard(loaded: Warehouse) -> None:
    rows = by(run_query(loaded, "dashboard", 60), "model")
    assert set(rows) == {"a", "b", "(none)"}
    a, b, none = rows["a"], rows["b"], rows["(none)"]
    assert (a["requests"], a["ok"], a["errors"], a["error_rate"]) == (3, 3, 0, 0.0)
    assert a["p50_ms"] == 200.0
    assert 200.0 < float(str(a["p95_ms"])) <= float(str(a["p99_ms"])) <= 300.0
    assert a["cost_usd"] == pytest.approx(0.03)
    assert (a["prompt_tokens"], a["completion_tokens"]) == (30, 60)
    assert a["avg_groundedness"] == pytest.approx(0.6)
    assert a["hallucinations"] == 1
    assert (b["requests"], b["ok"], b["errors"], b["error_rate"]) == (2, 1, 1, 0.5)
    assert (none["requests"], none["errors"]) == (1, 1)
    assert none["avg_groundedness"] is None


def test_window_includes_older_rows_when_asked(loaded: Warehouse) -> None:
    assert by(run_query(loaded, "dashboard", 180), "model")["a"]["requests"] == 4


def test_totals(loaded: Warehouse) -> None:
    rows = by(run_query(loaded, "totals", 60), "status", "error_code")
    assert rows[("ok", "")]["requests"] == 4
    assert rows[("failed", "timeout")]["requests"] == 1
    assert rows[("rejected", "invalid_request")]["requests"] == 1
    assert sum(int(str(row["requests"])) for row in rows.values()) == 6


def test_stage_latency(loaded: Warehouse) -> None:
    rows = run_query(loaded, "stage_latency", 60)
    stages = [row["stage"] for row in rows]
    assert stages == sorted(stages, key=[s.value for s in Stage].index), "pipeline order"
    table = by(rows, "stage", "model")
    assert table[("infer", "a")]["events"] == 2
    assert 100.0 <= float(str(table[("infer", "a")]["p50_ms"])) <= 300.0  # t-digest of 100 and 300
    assert table[("validate", "(none)")]["events"] == 3  # r1, r2 and the rejected r6 (5 ms)
    assert table[("validate", "(none)")]["p50_ms"] == 4.0
    assert table[("route", "a")]["events"] == 1
    assert table[("validate_response", "a")]["events"] == 3  # r1, r2 and r3 once despite re-processing
    assert table[("infer", "b")]["errors"] == 1


def test_feedback_and_deadletters(loaded: Warehouse) -> None:
    feedback = by(run_query(loaded, "feedback", 60), "label")
    assert feedback["hallucination"]["messages"] == 2
    assert feedback["hallucination"]["negative"] == 2
    assert feedback["good"]["avg_rating"] == 1.0
    letters = run_query(loaded, "deadletters", 60)
    assert [(r["source_topic"], r["messages"]) for r in letters] == [("t.requests", 1)]
    assert str(letters[0]["last_ts"]).endswith("Z")


def test_unknown_query(loaded: Warehouse) -> None:
    with pytest.raises(UnknownQuery):
        run_query(loaded, "nope", 60)


def test_every_query_has_docs_and_runs(loaded: Warehouse) -> None:
    for name, query in QUERIES.items():
        assert query.doc and query.name == name
        assert isinstance(run_query(loaded, name, 5), list)


async def test_query_server_answers_like_run_query(loaded: Warehouse) -> None:
    async with TestClient(TestServer(build_app(loaded, lambda: {"batches": 1}))) as client:
        assert (await client.get("/healthz")).status == 200
        response = await client.get("/query/dashboard", params={"minutes": "60"})
        assert response.status == 200
        body = await response.json()
        assert body["rows"] == json.loads(json.dumps(run_query(loaded, "dashboard", 60)))
        assert (await client.get("/query/nope")).status == 404
        assert (await client.get("/query/totals", params={"minutes": "x"})).status == 400
        assert (await (await client.get("/stats")).json()) == {"batches": 1}
        assert set(await (await client.get("/query")).json()) == set(QUERIES)


async def test_open_for_reading_prefers_a_live_sink(loaded: Warehouse, settings: Settings) -> None:
    here = settings.with_overrides(clickhouse_database=loaded.database)
    server = await start_query_server(here, loaded)
    try:
        info = json.loads(sink_file(here).read_text())
        assert info == {"pid": os.getpid(), "query_url": server.url}

        def read() -> tuple[type, list[dict[str, object]]]:
            with open_for_reading(here) as reader:
                return type(reader), reader.rows("totals", 60)

        kind, rows = await asyncio.to_thread(read)
        assert kind is SinkReader
        assert rows == run_query(loaded, "totals", 60)
    finally:
        await server.stop()
    assert not sink_file(here).exists()


def test_open_for_reading_opens_directly_without_a_sink(loaded: Warehouse, settings: Settings) -> None:
    here = settings.with_overrides(clickhouse_database=loaded.database)
    sink_file(here).parent.mkdir(parents=True)
    sink_file(here).write_text(json.dumps({"pid": 2**22 + 12345, "query_url": "http://127.0.0.1:9"}))  # stale
    with open_for_reading(here) as reader:
        assert isinstance(reader, DirectReader)
        assert by(reader.rows("dashboard", 60), "model")["a"]["requests"] == 3


async def test_web_dashboard_data_holds_every_panel(loaded: Warehouse, settings: Settings) -> None:
    here = settings.with_overrides(clickhouse_database=loaded.database)
    server = await start_query_server(here, loaded)
    try:
        for minutes in (60, 7 * 24 * 60):  # minute rollups, then hourly ones
            data = await asyncio.to_thread(read_dashboard, here, minutes)
            assert set(data["tables"]) == set(TABLES) and data["minutes"] == minutes
            for name in SERIES:
                assert data[name] == run_query(loaded, name, minutes)
            assert data["tables"]["models"] == run_query(loaded, "models", minutes)
            steps = {60: 60, 7 * 24 * 60: 3600}[minutes]
            times = [datetime.fromisoformat(row["minute"]) for row in data["timeseries"]]
            assert {(b - a).total_seconds() for a, b in pairwise(times)} == {steps}
    finally:
        await server.stop()
