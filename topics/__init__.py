"""Every Kafka topic of the contract: names, partitions and retention, declared once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic. `suffix` is appended to the configured prefix (default `sluice.`)."""

    suffix: str
    partitions: int = 6
    retention_ms: int = 7 * DAY_MS
    compacted: bool = False

    def name(self, prefix: str) -> str:
        return f"{prefix}{self.suffix}"

    def config(self) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": "compact" if self.compacted else "delete",
        }


REQUESTS = TopicSpec("requests")
VALIDATED = TopicSpec("validated")
SANITIZED = TopicSpec("sanitized")
ROUTED = TopicSpec("routed")
INFERRED = TopicSpec("inferred")
RESPONSES = TopicSpec("responses", retention_ms=1 * DAY_MS)
EVENTS = TopicSpec("events", retention_ms=3 * DAY_MS)
# Streamed answers: StreamChunk records keyed by correlation_id, read like the reply topic.
STREAM = TopicSpec("stream", retention_ms=1 * DAY_MS)
FEEDBACK = TopicSpec("feedback", retention_ms=30 * DAY_MS)
DEADLETTER = TopicSpec("deadletter", partitions=1, retention_ms=30 * DAY_MS)
ALERTS = TopicSpec("alerts", partitions=1, retention_ms=30 * DAY_MS)
# Internal: the feedback loop's advice to the router, one live record per (route, model).
ROUTE_ADVICE = TopicSpec("route-advice", partitions=1, retention_ms=30 * DAY_MS, compacted=True)
# Internal: accepted requests and settlements keyed by TENANT (quota decisions in tenant order).
ADMISSION = TopicSpec("admission", retention_ms=1 * DAY_MS)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    REQUESTS,
    VALIDATED,
    SANITIZED,
    ROUTED,
    INFERRED,
    RESPONSES,
    EVENTS,
    STREAM,
    FEEDBACK,
    DEADLETTER,
    ALERTS,
    ROUTE_ADVICE,
    ADMISSION,
)

# Stage topics must share one partition count: a correlation_id then lands on the same
# partition number at every hop, which keeps Faust tables co-partitioned with every stage.
STAGE_TOPICS: tuple[TopicSpec, ...] = (REQUESTS, VALIDATED, SANITIZED, ROUTED, INFERRED)
# ...and sluice.responses with them: it is the changelog of the `replies` table, written from the
# partition of the inferred record being answered.
COPARTITIONED: tuple[TopicSpec, ...] = (*STAGE_TOPICS, RESPONSES)


@dataclass(frozen=True)
class TopicLayout:
    """How many partitions and replicas each topic gets in a deployment. The specs above are
    the defaults; a layout overrides counts (from settings) but never adds or renames topics.

    `stage_partitions` sets every co-partitioned topic at once (they must agree); `partitions`
    sets the others by suffix. Faust's changelog topics follow the topic their table is keyed by."""

    stage_partitions: int | None = None
    partitions: Mapping[str, int] = field(default_factory=dict)
    replication_factor: int = 1
    min_insync_replicas: int = 1

    def __post_init__(self) -> None:
        known = {spec.suffix for spec in ALL_TOPICS}
        grouped = {spec.suffix for spec in COPARTITIONED}
        for suffix, count in self.partitions.items():
            if suffix not in known:
                names = ", ".join(sorted(known))
                raise ValueError(f"topic_partitions: unknown topic {suffix!r}; topics: {names}")
            if suffix in grouped:
                raise ValueError(
                    f"topic_partitions: {suffix!r} is a stage topic; set stage_partitions instead "
                    f"(stage topics {', '.join(sorted(grouped))} must share one partition count)"
                )
            if count < 1:
                raise ValueError(f"topic_partitions: {suffix!r} needs at least 1 partition, not {count}")
        if self.stage_partitions is not None and self.stage_partitions < 1:
            raise ValueError(f"stage_partitions must be at least 1, not {self.stage_partitions}")
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"topic_min_insync_replicas ({self.min_insync_replicas}) cannot exceed "
                f"topic_replication_factor ({self.replication_factor}): no write could ever succeed"
            )

    def partitions_of(self, spec: TopicSpec) -> int:
        if spec in COPARTITIONED:
            return self.stage_partitions or spec.partitions
        return self.partitions.get(spec.suffix, spec.partitions)

    def config_of(self, spec: TopicSpec) -> dict[str, str]:
        """The topic's configuration at creation: retention, cleanup and min.insync.replicas."""
        return {**spec.config(), "min.insync.replicas": str(self.min_insync_replicas)}


__all__ = ["ALL_TOPICS", "COPARTITIONED", "STAGE_TOPICS", "TopicLayout", "TopicSpec"] + [
    t.suffix.upper() for t in ALL_TOPICS
]
