"""A request rated again counts only its latest rating, in every feedback figure and both rollups
(migration 0008), on the real engine and through the sink's own path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest

from schemas import Event, Feedback
from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse, connect
from sluice.warehouse.migrate import default_migrations_dir, migrate
from sluice.warehouse.queries import run_query
from sluice.warehouse.sink import Batch, Sink, SinkRecord, SinkStats, write_batch
from sluice.warehouse.synthetic import synthetic_requests

FEEDBACK_QUERIES = ("feedback", "feedback_labels", "satisfaction", "feedback_series")
WINDOWS = (60, 24 * 60)  # minute and hour rollups
NOW = datetime.now(UTC)  # one clock: a redelivered record carries the same timestamp


class Rating(NamedTuple):
    request: int
    rating: int
    label: str
    offset: int  # the record's position: feedback_id
    minutes_ago: float


@pytest.fixture()
def warehouse(settings: Settings) -> Iterator[Warehouse]:
    client = connect(settings)
    migrate(client, default_migrations_dir())
    yield client
    client.close()


def send(
    warehouse: Warehouse, events: list[Event], ratings: list[Rating], requests: list[list[Event]]
) -> None:
    """One consumed batch through Sink.add and write_batch: event records, then ratings."""
    sink = Sink(Settings(), warehouse, SinkStats(), asyncio.Event())
    batch = Batch()
    for offset, event in enumerate(events):
        sink.add(batch, SinkRecord(sink.events_topic, 0, offset, event.model_dump_json().encode(), 0))
    for r in ratings:
        final = requests[r.request][-1]
        value = Feedback(request_id=final.request_id, tenant=final.tenant, rating=r.rating, label=r.label)  # type: ignore[arg-type]
        at = int((NOW - timedelta(minutes=r.minutes_ago)).timestamp() * 1000)
        sink.add(batch, SinkRecord(sink.feedback_topic, 0, r.offset, value.model_dump_json().encode(), at))
    assert not batch.to_deadletter
    write_batch(warehouse, batch, SinkStats())


def figures(warehouse: Warehouse) -> dict[str, list[dict[str, object]]]:
    return {f"{name}@{m}": run_query(warehouse, name, m) for name in FEEDBACK_QUERIES for m in WINDOWS}


def test_the_latest_rating_replaces_earlier_ones(warehouse: Warehouse, settings: Settings) -> None:
    requests = list(synthetic_requests(4, spread_minutes=20, ago_minutes=30))
    events = [event for request in requests for event in request]
    send(warehouse, events, [Rating(0, -1, "wrong", 1, 10), Rating(1, -1, "slow", 2, 10)], requests)
    send(
        warehouse,
        [],
        [
            Rating(0, 1, "good", 3, 5),  # request 0 rated again: this one counts
            Rating(2, -1, "wrong", 4, 8),  # request 2 twice in one batch: the later counts
            Rating(2, 1, "good", 5, 4),
            Rating(3, 1, "good", 6, 3),
        ],
        requests,
    )
    send(
        warehouse,
        [],
        [
            Rating(3, -1, "wrong", 7, 9),  # older than request 3's stored rating: counts nowhere
            Rating(0, -1, "wrong", 1, 10),  # request 0's first rating redelivered: no change
        ],
        requests,
    )
    # What counts: request 0 good(+1), 1 slow(-1), 2 good(+1), 3 good(+1).
    for window in WINDOWS:
        labels = {row["label"]: row for row in run_query(warehouse, "feedback", window)}
        assert {label: (row["messages"], row["negative"]) for label, row in labels.items()} == {
            "good": (3, 0),
            "slow": (1, 1),
        }, window
        satisfaction = run_query(warehouse, "satisfaction", window)
        ratings = sum(int(str(row["ratings"])) for row in satisfaction)
        total = sum(float(str(row["mean_rating"])) * int(str(row["ratings"])) for row in satisfaction)
        assert (ratings, round(total)) == (4, 2), window
        series = run_query(warehouse, "feedback_series", window)
        assert sum(int(str(row["messages"])) for row in series) == 4, window
    for grain in ("minute", "hour"):
        rolled = warehouse.query(
            f"SELECT sum(messages) AS n, sum(rating_sum) AS total, sum(negative) AS negative,"
            f" sum(positive) AS positive FROM {{db}}.feedback_{grain}"
        )
        assert rolled == [{"n": 4, "total": 2, "negative": 1, "positive": 3}], grain
    # Every rating is kept in the raw table (the redelivered copy once); one latest per request.
    assert warehouse.query("SELECT count() AS n FROM {db}.feedback")[0]["n"] == 7
    latest = warehouse.query("SELECT request_id, rating FROM {db}.feedback_latest FINAL ORDER BY request_id")
    assert [row["rating"] for row in latest] == [1, -1, 1, 1]

    # The same ratings in other batches (a restart re-reading them) change no figure.
    before = figures(warehouse)
    send(warehouse, [], [Rating(0, 1, "good", 3, 5), Rating(2, -1, "wrong", 4, 8)], requests)
    assert figures(warehouse) == before
