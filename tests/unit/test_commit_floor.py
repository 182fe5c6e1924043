"""Commits never pass a record an agent took and has not finished (sluice/offsets.py).

Faust's own gap-aware commit skips one unfinished record just above the committed offset, and
any number of them while a partition has no committed offset yet; each test below first shows
what Faust alone would commit, then what Sluice's consumer commits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import faust
import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ConsumerMessage

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


def record_at(offset: int) -> Any:
    return ConsumerMessage(PARTITION.topic, PARTITION.partition, offset, 0.0, 0, None, b"k", b"v", None)


def acking_consumer(app: Any, kind: type[Any]) -> Any:
    consumer = consumer_of(app, kind)
    app.topics._acking_topics.add(PARTITION.topic)
    consumer._committed_offset[PARTITION] = 5
    return consumer


def test_a_record_the_stream_skipped_is_not_committed(app: Any) -> None:
    """Faust's stream acks a record it skips (fetched in an earlier consumer generation, or
    pulled while flow control is suspended for a rebalance or the stop). Counted, that ack
    commits past a record no agent handled, and nobody reads it again."""
    faust_alone = acking_consumer(app, faust_aiokafka.Consumer)
    skipped = record_at(5)
    skipped.ack(faust_alone)  # what the stream's `finally` does for a skipped record
    assert faust_alone._new_offset(PARTITION) == 6, "Faust alone commits past record 5"

    app.unfinished_records = UnfinishedRecords()
    consumer = acking_consumer(app, ShortPollConsumer)
    consumer._unacked_messages.add(skipped := record_at(5))
    refused_before = ShortPollConsumer.skipped_acks_refused
    skipped.ack(consumer)
    assert consumer._new_offset(PARTITION) is None
    assert skipped not in consumer._unacked_messages, "a rebalance does not wait for it"
    assert ShortPollConsumer.skipped_acks_refused == refused_before + 1


def test_an_agent_s_ack_of_a_finished_record_is_committed(app: Any) -> None:
    unfinished = app.unfinished_records = UnfinishedRecords()
    consumer = acking_consumer(app, ShortPollConsumer)
    finished = record_at(5)
    unfinished.taken(PARTITION, 5)
    with unfinished.acking(finished):
        assert unfinished.ack_is_an_agents(finished)
        finished.ack(consumer)
    unfinished.finished(PARTITION, 5)
    assert not unfinished.ack_is_an_agents(finished), "only while the agent acks"
    assert consumer._new_offset(PARTITION) == 6


def test_a_record_missing_at_the_head_holds_the_commit(app: Any) -> None:
    """Record 5 (the next to commit) was never acked, and no agent holds it: a record lost
    between fetch and agent. Faust's own check lets exactly one such record through."""
    assert commit_after(app, faust_aiokafka.Consumer, 5, [6, 7]) == 8, "Faust alone commits past 5"
    app.unfinished_records = UnfinishedRecords()
    assert commit_after(app, ShortPollConsumer, 5, [6, 7]) is None
    assert commit_after(app, ShortPollConsumer, 5, [5, 6, 7]) == 8


def test_a_gap_at_the_head_is_committed_over(app: Any) -> None:
    """An offset with no record to deliver (a transaction marker) is a gap Faust fills in."""
    app.unfinished_records = UnfinishedRecords()
    consumer = consumer_of(app, ShortPollConsumer)
    consumer._committed_offset[PARTITION] = 5
    consumer._gap[PARTITION].addi(5, 6)
    consumer._acked[PARTITION] = [6, 7]
    consumer._acked_index[PARTITION] = {6, 7}
    assert consumer._new_offset(PARTITION) == 8


async def test_records_read_again_after_a_seek_are_delivered_again(app: Any) -> None:
    """Before a rebalance's seek took effect, records 5-9 were fetched and the read mark moved
    to 9 (record 6 was cleared from the agent's queue). Read again from 5, Faust drops 5-8
    as already read: record 6 is then never handled. They are delivered again."""
    consumer = consumer_of(app, ShortPollConsumer)
    fetched = [record_at(offset) for offset in (5, 6, 7, 8, 9, 10)]

    async def from_the_broker(self: Any, timeout: float) -> Any:
        for record in fetched:
            yield PARTITION, record

    delivered: list[int] = []

    async def callback(message: Any) -> None:
        delivered.append(message.offset)
        if message.offset == fetched[-1].offset:
            fetcher._stopped.set()

    consumer.callback = callback
    fetcher = consumer  # a Service whose stop ends the drain loop, as the Fetcher's does
    consumer._read_offset[PARTITION] = 9
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FaustConsumer, "getmany", from_the_broker)  # what the broker returns
        await consumer._drain_messages(fetcher)
    assert delivered == [5, 6, 7, 8, 9, 10]
    assert not consumer._gap[PARTITION], "reading again is not a gap to commit over"


async def test_a_record_missing_at_the_head_is_read_again(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Record 5 left the fetch but never reached an agent (6 and 7 did): after a short wait the
    partition is sought back to 5, so it is delivered again instead of waiting for a restart."""
    unfinished = app.unfinished_records = UnfinishedRecords()
    consumer = consumer_of(app, ShortPollConsumer)
    sought: list[tuple[Any, int]] = []

    async def seek(tp: Any, offset: int) -> None:
        sought.append((tp, offset))

    clock = [100.0]
    monkeypatch.setattr(consumer, "_seek", seek)
    monkeypatch.setattr(consumer, "assignment", lambda: {PARTITION})
    monkeypatch.setattr("sluice.kafka_transport.time.monotonic", lambda: clock[0])
    consumer._committed_offset[PARTITION] = 5
    consumer._acked[PARTITION] = [6, 7]
    consumer._acked_index[PARTITION] = {6, 7}
    consumer._read_offset[PARTITION] = 7

    assert consumer._new_offset(PARTITION) is None
    clock[0] += 1.0
    assert consumer._new_offset(PARTITION) is None
    await asyncio.sleep(0)
    assert sought == [], "not at once: it may still be on its way to the agent"
    clock[0] += 1.5
    assert consumer._new_offset(PARTITION) is None
    await asyncio.sleep(0)
    assert sought == [(PARTITION, 5)]
    assert consumer._read_offset[PARTITION] is None, "what comes next is neither dropped nor a gap"

    unfinished.taken(PARTITION, 5)  # now an agent has it: slow, not missing
    clock[0] += 10
    assert consumer._new_offset(PARTITION) is None
    assert consumer._new_offset(PARTITION) is None
    await asyncio.sleep(0)
    assert sought == [(PARTITION, 5)]
