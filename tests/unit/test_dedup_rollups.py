"""Redelivered rows on the real engine: sending every row of 2% of the requests again, in later
batches, changes no figure of any named query at 1 hour, 24 hours or 7 days; the rollups agree
with the raw tables (ratings: the latest of each request); and a one-hour window reads a small
part of the table. Event records go in as the sink sends them (JSON parsed by the engine)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from schemas import Event, Feedback
from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse, connect
from sluice.warehouse.migrate import default_migrations_dir, migrate
from sluice.warehouse.queries import QUERIES, run_query
from sluice.warehouse.sink import feedback_row, insert_events, insert_rows
from sluice.warehouse.synthetic import synthetic_requests

WINDOWS = (60, 24 * 60, 7 * 24 * 60)
BATCH = 50  # requests per insert batch
COPY_EVERY = 50  # every 50th request (2%) is sent again, two batches later
# Requests finishing well inside each window, so the windows' start does not move across data
# while the test runs: 5-45 minutes ago, 2-20 hours ago, 2-6 days ago.
SPANS = ((300, 5, 40), (200, 120, 18 * 60), (150, 2 * 1440, 4 * 1440))


def traffic() -> list[list[Event]]:
    requests: list[list[Event]] = []
    for n, (count, ago, spread) in enumerate(SPANS):
        requests += synthetic_requests(count, seed=n, spread_minutes=spread, ago_minutes=ago, prefix=f"s{n}")
    requests.sort(key=lambda events: events[-1].ts)  # time order, as the sink sees them
    return requests


RERATE_OFFSET = 100_000  # position of a second rating: a feedback_id of its own


def rows_of(requests: list[list[Event]], first: int) -> dict[str, list[Any]]:
    """The event records (JSON, as on the topic) and ratings: every 4th request rated, every 8th
    rated again a minute later with another score (only that one counts)."""
    events = [event for request in requests for event in request]
    ratings = [
        feedback_row(
            Feedback(request_id=r[-1].request_id, tenant=r[-1].tenant, rating=1 - (first + i) % 3),  # type: ignore[arg-type]
            0,
            first + i,
            r[-1].ts + timedelta(seconds=30),
        )
        for i, r in enumerate(requests)
        if (first + i) % 4 == 0
    ]
    ratings += [
        feedback_row(
            Feedback(
                request_id=r[-1].request_id, tenant=r[-1].tenant, rating=(first + i) % 3 - 1, label="again"
            ),  # type: ignore[arg-type]
            0,
            RERATE_OFFSET + first + i,
            r[-1].ts + timedelta(seconds=90),
        )
        for i, r in enumerate(requests)
        if (first + i) % 8 == 0
    ]
    return {"events": [e.model_dump_json().encode() for e in events], "feedback": ratings}


def insert(warehouse: Warehouse, rows: dict[str, list[Any]]) -> None:
    """Events before the ratings that name their requests, as the sink writes a batch."""
    assert not insert_events(warehouse, rows["events"]), "the engine parsed the JSON (no typed fallback)"
    insert_rows(warehouse, "feedback", rows["feedback"])


def load(warehouse: Warehouse, requests: list[list[Event]], copies: bool) -> None:
    """Insert in batches; with `copies`, every row of each 50th request goes in again later."""
    later: dict[int, list[dict[str, list[Any]]]] = {}
    batches = range(0, len(requests), BATCH)
    for number, first in enumerate(batches):
        batch = requests[first : first + BATCH]
        rows = rows_of(batch, first)
        for extra in later.pop(number, []):
            for table, more in extra.items():
                rows[table] = rows[table] + more
        insert(warehouse, rows)
        if copies:
            chosen = [i for i in range(len(batch)) if (first + i) % COPY_EVERY == 0]
            for i in chosen:
                later.setdefault(number + 2, []).append(rows_of([batch[i]], first + i))
    for extras in later.values():  # copies of the last batches
        for extra in extras:
            insert(warehouse, extra)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, chdb_dsn: str) -> Iterator[tuple[Warehouse, Warehouse]]:
    """The same traffic loaded twice: once as sent, once with the redelivered copies."""
    requests = traffic()
    loaded = []
    for name, copies in (("sluice_once", False), ("sluice_copies", True)):
        settings = Settings(
            home=tmp_path_factory.mktemp(name), clickhouse_dsn=chdb_dsn, clickhouse_database=name
        )
        warehouse = connect(settings)
        warehouse.command("DROP DATABASE IF EXISTS {db}")
        migrate(warehouse, default_migrations_dir())
        load(warehouse, requests, copies)
        loaded.append(warehouse)
    yield loaded[0], loaded[1]
    for warehouse in loaded:
        warehouse.close()


def figures(warehouse: Warehouse, name: str, minutes: int) -> list[dict[str, object]]:
    """A query's rows with floats to 10 significant digits (sums in another order differ in
    the last bit)."""
    return [
        {k: float(f"{v:.10g}") if isinstance(v, float) else v for k, v in row.items()}
        for row in run_query(warehouse, name, minutes)
    ]


@pytest.mark.parametrize("minutes", WINDOWS)
def test_redelivered_copies_change_no_figure(pair: tuple[Warehouse, Warehouse], minutes: int) -> None:
    once, copies = pair
    for name in QUERIES:
        assert figures(copies, name, minutes) == figures(once, name, minutes), name


def test_the_copies_were_sent_and_dropped(pair: tuple[Warehouse, Warehouse]) -> None:
    once, copies = pair
    sent = sum(1 for i in range(sum(count for count, _, _ in SPANS)) if i % COPY_EVERY == 0)
    assert sent >= 10
    for table, key in (("events", "event_id"), ("requests", "request_id"), ("feedback", "feedback_id")):
        sql = f"SELECT count() AS n, uniqExact({key}) AS keys FROM {{db}}.{table}"
        assert copies.query(sql) == once.query(sql)
        assert copies.query(sql)[0]["n"] == copies.query(sql)[0]["keys"]
    assert once.query("SELECT count() AS n FROM {db}.requests")[0]["n"] == 650


def _one(warehouse: Warehouse, sql: str) -> dict[str, object]:
    return warehouse.query(sql)[0]


@pytest.mark.parametrize("grain", ["minute", "hour"])
def test_rollups_agree_with_the_raw_tables(pair: tuple[Warehouse, Warehouse], grain: str) -> None:
    _, warehouse = pair
    raw = warehouse.query(
        "SELECT model, count() AS requests, countIf(status != 'ok') AS errors, sum(cost_usd) AS cost,"
        " sum(prompt_tokens) AS prompt, countIf(hallucination) AS hallucinations"
        " FROM {db}.requests GROUP BY model ORDER BY model"
    )
    rolled = warehouse.query(
        "SELECT t.model AS model, sum(t.requests) AS requests, sumIf(t.requests, t.status != 'ok') AS errors,"
        " sum(t.cost_usd) AS cost, sum(t.prompt_tokens) AS prompt, sum(t.hallucinations) AS hallucinations"
        f" FROM {{db}}.request_{grain} AS t GROUP BY model ORDER BY model"
    )
    assert [(r["model"], r["requests"], r["errors"], r["prompt"], r["hallucinations"]) for r in raw] == [
        (r["model"], r["requests"], r["errors"], r["prompt"], r["hallucinations"]) for r in rolled
    ]
    assert [r["cost"] for r in rolled] == pytest.approx([r["cost"] for r in raw])
    events = _one(warehouse, "SELECT count() AS n, sum(duration_ms > 0) AS timed FROM {db}.events")
    stages = _one(warehouse, f"SELECT sum(t.events) AS n FROM {{db}}.stage_{grain} AS t")
    assert stages["n"] == events["n"]
    ratings = _one(
        warehouse,
        "SELECT count() AS n, sum(rating) AS total FROM (SELECT argMax(rating, (ts, feedback_id)) AS rating"
        " FROM {db}.feedback GROUP BY tenant, request_id)",
    )
    assert ratings["n"] < _one(warehouse, "SELECT count() AS n FROM {db}.feedback")["n"]  # some rated twice
    rolled_ratings = _one(
        warehouse,
        f"SELECT sum(t.messages) AS n, sum(t.rating_sum) AS total FROM {{db}}.feedback_{grain} AS t",
    )
    assert (rolled_ratings["n"], rolled_ratings["total"]) == (ratings["n"], ratings["total"])
    answered = _one(
        warehouse,
        "SELECT count() AS n FROM {db}.requests"
        " WHERE status = 'ok' AND question_hash != '' AND answer_hash != ''",
    )
    assert _one(warehouse, "SELECT sum(t.requests) AS n FROM {db}.answers_hour AS t")["n"] == answered["n"]


def test_every_rating_found_its_request(pair: tuple[Warehouse, Warehouse]) -> None:
    _, warehouse = pair
    unmatched = _one(
        warehouse, "SELECT countIf(model = '' OR route = '') AS n, count() AS total FROM {db}.feedback"
    )
    assert unmatched["total"] and unmatched["n"] == 0


def test_a_one_hour_window_prunes_partitions_and_granules(pair: tuple[Warehouse, Warehouse]) -> None:
    _, warehouse = pair
    where = "WHERE ts >= now64(3) - toIntervalMinute(60)"
    plan = "\n".join(
        str(next(iter(row.values())))
        for row in warehouse.query(f"EXPLAIN indexes = 1 SELECT count() FROM {{db}}.events {where}")
    )
    assert "Partition" in plan and "PrimaryKey" in plan and "toStartOfHour(ts)" in plan
    estimate = warehouse.query(
        f"EXPLAIN ESTIMATE SELECT stage, count() FROM {{db}}.events {where} GROUP BY stage"
    )
    to_read = sum(int(row["rows"]) for row in estimate)
    # The test's parts hold one granule each, so pruning shows as whole days left unread.
    two_days = "SELECT count() AS n FROM {db}.events WHERE ts >= now64(3) - toIntervalDay(2)"
    recent = _one(warehouse, two_days)["n"]
    total = _one(warehouse, "SELECT count() AS n FROM {db}.events")["n"]
    assert isinstance(recent, int) and isinstance(total, int) and recent < total
    assert 0 < to_read <= recent, (to_read, recent, total)


def test_window_of_the_hourly_rollups_covers_the_days(pair: tuple[Warehouse, Warehouse]) -> None:
    once, _ = pair
    totals = {m: sum(int(str(r["requests"])) for r in run_query(once, "totals", m)) for m in WINDOWS}
    assert totals == {60: 300, 24 * 60: 500, 7 * 24 * 60: 650}
