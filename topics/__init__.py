"""Every Kafka topic of the contract: names, partitions and retention, declared once."""

from __future__ import annotations

from dataclasses import dataclass

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

__all__ = ["ALL_TOPICS", "STAGE_TOPICS", "TopicSpec"] + [t.suffix.upper() for t in ALL_TOPICS]
