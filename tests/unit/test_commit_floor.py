"""Commits never pass a record an agent took and has not finished (sluice/offsets.py).

Faust's own gap-aware commit skips one unfinished record just above the committed offset, and
any number of them while a partition has no committed offset yet; each test below first shows
what Faust alone would commit, then what Sluice's consumer commits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import faust
import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from sluice.kafka_transport import ShortPollConsumer
from sluice.offsets import UnfinishedRecords, split_at_floor

PARTITION = TP("sluice.requests", 0)


@pytest.fixture()
def app() -> Iterator[Any]:
    yield faust.App("commit-floor-test", broker="kafka://127.0.0.1:1")


def consumer_of(app: Any, kind: type[Any]) -> Any:
    async def nothing(*_: Any) -> None:
        return None

    return kind(
        app.transport, callback=nothing, on_partitions_revoked=nothing, on_partitions_assigned=nothing
    )


def commit_after(app: Any, kind: type[Any], committed: int | None, acked: list[int]) -> int | None:
    consumer = consumer_of(app, kind)
    consumer._committed_offset[PARTITION] = committed
    consumer._acked[PARTITION] = list(acked)
    consumer._acked_index[PARTITION] = set(acked)
    return consumer._new_offset(PARTITION)  # type: ignore[no-any-return]


def test_an_unfinished_record_right_after_the_committed_offset_is_not_skipped(app: Any) -> None:
    # committed 5 (the next record to read), record 5 still at the model, 6 and 7 done
    assert commit_after(app, faust_aiokafka.Consumer, 5, [6, 7]) == 8, "Faust alone skips record 5"
    app.unfinished_records = UnfinishedRecords()
    app.unfinished_records.taken(PARTITION, 5)
    assert commit_after(app, ShortPollConsumer, 5, [6, 7]) is None


def test_nothing_is_skipped_before_a_partition_has_its_first_commit(app: Any) -> None:
    assert commit_after(app, faust_aiokafka.Consumer, None, [1, 2]) == 3, "Faust alone skips record 0"
    app.unfinished_records = UnfinishedRecords()
    app.unfinished_records.taken(PARTITION, 0)
    assert commit_after(app, ShortPollConsumer, None, [1, 2]) is None


def test_commits_resume_up_to_the_next_unfinished_record_once_it_is_done(app: Any) -> None:
    unfinished = app.unfinished_records = UnfinishedRecords()
    for offset in (5, 6, 7, 8):
        unfinished.taken(PARTITION, offset)
    for offset in (6, 7, 5):
        unfinished.finished(PARTITION, offset)
    consumer = consumer_of(app, ShortPollConsumer)
    consumer._committed_offset[PARTITION] = 5
    consumer._acked[PARTITION] = [6, 7, 5, 9]  # 8 still running; 9 was quick
    consumer._acked_index[PARTITION] = {5, 6, 7, 9}
    assert consumer._new_offset(PARTITION) == 8
    assert consumer._acked[PARTITION] == [9], "what is held back stays acked for the next commit"
    consumer._committed_offset[PARTITION] = 8
    unfinished.finished(PARTITION, 8)
    consumer._acked[PARTITION].append(8)
    consumer._acked_index[PARTITION].add(8)
    assert consumer._new_offset(PARTITION) == 10


def test_a_second_copy_acked_does_not_release_the_first(app: Any) -> None:
    """After a rebalance's seek a record is read again while its first copy still publishes:
    the second copy's ack must not let the commit pass the first."""
    unfinished = app.unfinished_records = UnfinishedRecords()
    unfinished.taken(PARTITION, 5)  # first copy, still publishing
    unfinished.taken(PARTITION, 5)  # second copy: already answered, acked at once
    unfinished.finished(PARTITION, 5)
    assert commit_after(app, ShortPollConsumer, 5, [5, 6]) is None
    unfinished.finished(PARTITION, 5)
    assert commit_after(app, ShortPollConsumer, 5, [5, 6]) == 7


def test_without_unfinished_records_commits_are_faust_s(app: Any) -> None:
    app.unfinished_records = UnfinishedRecords()
    assert commit_after(app, ShortPollConsumer, 3, [3, 4, 6]) == 5


def test_split_at_floor() -> None:
    assert split_at_floor([3, 4, 6, 7], 5) == ([3, 4], [6, 7])
    assert split_at_floor([5, 6], 5) == ([], [5, 6])


def test_unfinished_records_count_copies_and_ignore_unknown_finishes() -> None:
    unfinished = UnfinishedRecords()
    unfinished.finished(PARTITION, 1)  # never taken: nothing to do
    unfinished.taken(PARTITION, 4)
    unfinished.taken(PARTITION, 2)
    unfinished.taken(PARTITION, 2)
    assert unfinished.lowest(PARTITION) == 2
    unfinished.finished(PARTITION, 2)
    assert unfinished.lowest(PARTITION) == 2
    unfinished.finished(PARTITION, 2)
    assert unfinished.lowest(PARTITION) == 4
    unfinished.finished(PARTITION, 4)
    assert unfinished.lowest(PARTITION) is None
