"""Which offsets a worker may commit: never past a record it took and has not finished.

Agents finish records concurrently (model calls take seconds) and ack each one when its outcome
is on Kafka, so acks come out of order. Faust's gap-aware commit then commits the first run of
consecutive acked offsets, but its guard against a hole at the head of that run is off by one
(a single unfinished record just above the committed offset is skipped), and it is skipped
altogether while a partition has no committed offset yet. A record skipped like that is never
delivered again if the worker then stops before finishing it: a request without an answer.

`UnfinishedRecords` counts the records each agent has taken but not acked, per partition (a
record read twice, after a rebalance's seek, counts twice), and `split_at_floor` keeps every
acked offset at or above the lowest of them out of the commit.

Faust also acks records no agent handled: a stream acks each record it skips, one fetched in an
earlier consumer generation or pulled while flow control is suspended (during a rebalance and
at shutdown). That ack puts the skipped offset in the next commit, and the record is never
delivered again: a request without an answer. So the consumer counts only the acks an agent
makes for a record it finished (`acking`); a skipped record stays uncommitted and is read again
after the seek that follows, or by the worker that takes its partition."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterator
from contextlib import contextmanager


class UnfinishedRecords:
    """Records taken by an agent and not yet acked, per topic-partition."""

    def __init__(self) -> None:
        self._by_partition: dict[Hashable, Counter[int]] = {}
        self._acking: set[int] = set()  # id() of the records whose ack an agent is making now

    def taken(self, partition: Hashable, offset: int) -> None:
        self._by_partition.setdefault(partition, Counter())[offset] += 1

    def finished(self, partition: Hashable, offset: int) -> None:
        """The record was acked (its outcome is on Kafka, or it needed none)."""
        counts = self._by_partition.get(partition)
        if counts is None or counts[offset] <= 0:
            return
        counts[offset] -= 1
        if counts[offset] == 0:
            del counts[offset]

    @contextmanager
    def acking(self, record: object) -> Iterator[None]:
        """Around an agent's ack of a record it finished: the acks the consumer counts."""
        self._acking.add(id(record))
        try:
            yield
        finally:
            self._acking.discard(id(record))

    def ack_is_an_agents(self, record: object) -> bool:
        """Is this ack an agent's, for a record it finished (not Faust acking a skipped one)?"""
        return id(record) in self._acking

    def holds(self, partition: Hashable, offset: int) -> bool:
        """Is this record taken by an agent and not finished yet?"""
        counts = self._by_partition.get(partition)
        return bool(counts) and counts[offset] > 0  # type: ignore[index]

    def lowest(self, partition: Hashable) -> int | None:
        """The lowest offset still unfinished in this partition, None when all are finished."""
        counts = self._by_partition.get(partition)
        return min(counts) if counts else None


def split_at_floor(acked: list[int], floor: int) -> tuple[list[int], list[int]]:
    """(offsets that may be committed, offsets held back): everything at or above `floor`, the
    lowest unfinished offset, waits, even if acked (a second copy of that record was)."""
    return [offset for offset in acked if offset < floor], [offset for offset in acked if offset >= floor]
