"""The rollup metrics on hand-made rows: materialized views fill the rollups, each metric's
numbers are right, rollups agree with the exact raw-table queries, and the docs are current."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import ErrorCode, Event, Feedback, RequestSummary, Stage, Status
from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse, connect
from sluice.warehouse.dashboard import parse_range, sparkline
from sluice.warehouse.metrics import ALERT_METRICS, METRIC_QUERIES, metrics_markdown
from sluice.warehouse.migrate import default_migrations_dir, migrate
from sluice.warehouse.queries import run_query
from sluice.warehouse.sink import Row, event_row, feedback_row, insert_rows, request_row
from sluice.warehouse.synthetic import synthetic_requests

# Set again when the fixture loads its data: the queries' windows count back from the real clock,
# and the whole suite runs long enough for an import-time NOW to fall out of a 10-minute window.
NOW = datetime.now(UTC)


def final(
    request_id: str,
    model: str,
    *,
    route: str = "simple",
    status: Status = Status.OK,
    error: ErrorCode | None = None,
    cost: float = 0.01,
    cached: bool = False,
    hallucination: bool | None = None,
    question: str = "",
    answer: str = "",
    tenant: str = "acme",
) -> Event:
    attributes = {"max_tokens": "100"}
    if question:
        attributes.update(question_hash=question, answer_hash=answer)
    return Event(
        event_id=f"{request_id}/validate_response",
        request_id=request_id,
        correlation_id=f"c-{request_id}",
        tenant=tenant,
        stage=Stage.VALIDATE_RESPONSE,
        status=status.value,
        ts=NOW - timedelta(minutes=2),
        duration_ms=5.0,
        model=model,
        prompt_tokens=30,
        completion_tokens=50,
        cost_usd=cost,
        cached=cached,
        cache_savings_usd=0.02 if cached else 0.0,
        error_code=error,
        attributes=attributes,
        summary=RequestSummary(
            received_at=NOW - timedelta(minutes=2, seconds=1),
            finished_at=NOW - timedelta(minutes=2),
            status=status,
            latency_ms=1000.0,
            hallucination=hallucination,
            groundedness=None if hallucination is None else (0.2 if hallucination else 0.9),
            route=route,
        ),
    )


def insert(warehouse: Warehouse, table: str, rows: list[Row]) -> None:
    insert_rows(warehouse, table, rows)


def load(warehouse: Warehouse, events: list[Event]) -> None:
    insert(warehouse, "events", [event_row(e) for e in events])
    insert(warehouse, "requests", [row for e in events if (row := request_row(e)) is not None])


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, chdb_dsn: str) -> Iterator[Warehouse]:
    settings = Settings(
        home=tmp_path_factory.mktemp("home"), clickhouse_dsn=chdb_dsn, clickhouse_database="sluice_metrics"
    )
    global NOW
    NOW = datetime.now(UTC)
    warehouse = connect(settings)
    warehouse.command("DROP DATABASE IF EXISTS {db}")
    migrate(warehouse, default_migrations_dir())
    events = [
        final("a1", "small", hallucination=False, question="q1", answer="x"),
        final("a2", "small", hallucination=True, question="q1", answer="y"),  # q1: divergent
        final("a3", "small", cached=True, cost=0.0, question="q2", answer="z"),
        final("a4", "small", question="q2", answer="z"),  # q2: consistent
        final("b1", "large", route="hard", cost=0.5, tenant="globex"),
        final("b2", "large", route="hard", status=Status.FAILED, error=ErrorCode.TIMEOUT, cost=0.0),
        final("b3", "large", route="hard", status=Status.FAILED, error=ErrorCode.RESPONSE_INVALID, cost=0.2),
        Event(
            event_id="breaker-1",
            request_id="_breaker",
            correlation_id="_breaker",
            tenant="_system",
            stage=Stage.INFER,
            status="breaker_open",
            ts=NOW - timedelta(minutes=1),
            model="large",
        ),
    ]
    load(warehouse, events)
    # The last rating names globex's request from another tenant: it must not count for b1.
    ratings = [
        ("a1", "acme", 1),
        ("a2", "acme", -1),
        ("a3", "acme", -1),
        ("b1", "globex", 1),
        ("b1", "acme", -1),
    ]
    insert(
        warehouse,
        "feedback",
        [
            feedback_row(Feedback(request_id=rid, tenant=tenant, rating=rating), 0, n, NOW)  # type: ignore[arg-type]
            for n, (rid, tenant, rating) in enumerate(ratings)
        ],
    )
    yield warehouse
    warehouse.close()


def by(rows: list[dict[str, object]], *keys: str) -> dict[object, dict[str, object]]:
    return {(row[keys[0]] if len(keys) == 1 else tuple(row[k] for k in keys)): row for row in rows}


def test_models_overview(loaded: Warehouse) -> None:
    rows = by(run_query(loaded, "models", 10), "model")
    small, large = rows["small"], rows["large"]
    assert (small["requests"], small["errors"], small["cache_hit_rate"]) == (4, 0, 0.25)
    assert small["hallucination_rate"] == 0.5
    assert (large["requests"], large["errors"], large["error_rate"]) == (3, 2, pytest.approx(0.6667))
    assert large["p50_ms"] == 1000.0
    assert large["cost_per_request"] == pytest.approx(0.7 / 3, abs=1e-6)


def test_errors_by_category(loaded: Warehouse) -> None:
    rows = by(run_query(loaded, "errors_by_category", 10), "error_code")
    assert rows["timeout"]["category"] == "upstream" and rows["timeout"]["rate"] == pytest.approx(
        1 / 7, abs=1e-4
    )
    assert rows["response_invalid"]["category"] == "quality"
    assert "" not in rows


def test_cost_per_1k_against_the_ladder(loaded: Warehouse) -> None:
    rows = by(run_query(loaded, "cost_per_1k", 10), "model")
    # small: 0.03 USD over 320 tokens = 0.094 per 1K -> within the 0.12 rung.
    assert rows["small"]["cost_per_1k_tokens"] == pytest.approx(0.09375, abs=1e-5)
    assert rows["small"]["ladder_usd"] == 0.12
    assert rows["large"]["ladder_usd"] is None  # 0.7 USD / 240 tokens: dearer than every rung


def test_top_routes_cache_and_distribution(loaded: Warehouse) -> None:
    routes = run_query(loaded, "top_routes", 10)
    assert [r["route"] for r in routes] == ["hard", "simple"]
    cache = by(run_query(loaded, "cache", 10), "model")
    assert cache["small"]["cache_hits"] == 1 and cache["small"]["cache_savings_usd"] == pytest.approx(0.02)
    shares = by(run_query(loaded, "cost_distribution", 10), "tenant", "model")
    assert shares[("globex", "large")]["share"] == pytest.approx(0.5 / 0.73, abs=1e-4)


def test_quality_metrics(loaded: Warehouse) -> None:
    validity = by(run_query(loaded, "validity", 10), "model")
    assert (validity["large"]["reviewed"], validity["large"]["invalid"]) == (2, 1)
    assert validity["large"]["validity_rate"] == 0.5
    consistency = by(run_query(loaded, "consistency", 10), "model")
    assert (consistency["small"]["repeated_questions"], consistency["small"]["divergent"]) == (2, 1)
    assert consistency["small"]["consistency_rate"] == 0.5
    tokens = by(run_query(loaded, "token_utilisation", 10), "model")
    assert tokens["small"]["completion_share"] == 0.5 and tokens["small"]["prompt_share"] == 0.375


def test_satisfaction_joins_ratings_to_models_and_routes(loaded: Warehouse) -> None:
    rows = by(run_query(loaded, "satisfaction", 10), "model", "route")
    assert rows[("small", "simple")]["ratings"] == 3
    assert rows[("small", "simple")]["mean_rating"] == pytest.approx(-0.333, abs=1e-3)
    assert rows[("large", "hard")]["mean_rating"] == 1.0
    assert rows[("large", "hard")]["ratings"] == 1
    assert rows[("(none)", "(unrouted)")]["ratings"] == 1  # the other tenant's rating: not attributed


def test_breakers_and_stage_latency_keep_transitions_apart(loaded: Warehouse) -> None:
    assert by(run_query(loaded, "breakers", 10), "model")["large"]["opened"] == 1
    stages = run_query(loaded, "latency_by_stage", 10)
    assert all(row["stage"] != "infer" for row in stages), "a breaker transition is not stage work"


def test_alert_metrics(loaded: Warehouse) -> None:
    def value(name: str, minutes: int = 10) -> object:
        return loaded.query(ALERT_METRICS[name].query.sql, {"minutes": minutes})[0]["value"]

    assert value("error_rate") == pytest.approx(2 / 7)
    assert value("hallucination_rate") == pytest.approx(0.5)
    assert value("cost_per_hour") == pytest.approx(0.73 * 6)
    assert value("p95_latency_ms") == pytest.approx(1000.0)


def test_timeseries_fills_empty_minutes(loaded: Warehouse) -> None:
    rows = run_query(loaded, "timeseries", 10)
    assert len(rows) in (11, 12)
    assert sum(int(str(r["requests"])) for r in rows) == 7


def test_rollups_agree_with_the_exact_queries(tmp_path: Path, chdb_dsn: str) -> None:
    settings = Settings(home=tmp_path, clickhouse_dsn=chdb_dsn, clickhouse_database="sluice_agree")
    warehouse = connect(settings)
    try:
        warehouse.command("DROP DATABASE IF EXISTS {db}")
        migrate(warehouse, default_migrations_dir())
        load(warehouse, [e for request in synthetic_requests(400, spread_minutes=30) for e in request])
        exact = by(run_query(warehouse, "dashboard", 60), "model")
        rolled = by(run_query(warehouse, "models", 60), "model")
        assert set(exact) == set(rolled)
        for model, row in rolled.items():
            assert row["requests"] == exact[model]["requests"]
            assert row["errors"] == exact[model]["errors"]
            assert row["cost_usd"] == pytest.approx(exact[model]["cost_usd"], abs=1e-5)
    finally:
        warehouse.close()


def test_every_metric_is_documented_and_the_docs_are_current() -> None:
    assert all(query.doc for query in METRIC_QUERIES)
    docs = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
    assert docs.read_text() == metrics_markdown(), "run: python -m sluice.warehouse.metrics > docs/metrics.md"


def test_sparkline_and_range() -> None:
    assert sparkline([0.0, 1.0, None, 2.0]) == "▁▄ █"
    assert len(sparkline([float(i) for i in range(1440)], width=60)) == 60
    assert (parse_range("15m"), parse_range("6h"), parse_range("1d")) == (15, 360, 1440)
    with pytest.raises(ValueError):
        parse_range("soon")
