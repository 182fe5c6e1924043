"""Kafka administration shared by every process: create the contract's topics at start-up with
the configured layout, and refuse to run on topics laid out differently."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from sluice.settings import Settings
from topics import ALL_TOPICS, COPARTITIONED, TopicSpec

log = logging.getLogger(__name__)


class TopicLayoutError(RuntimeError):
    """An existing topic does not match the declared layout; the message says what differs."""


@dataclass(frozen=True)
class Mismatch:
    topic: str
    declared: int
    actual: int
    fatal: bool

    def describe(self) -> str:
        return f"{self.topic}: {self.actual} partitions, declared {self.declared}"


def compare_layout(settings: Settings, actual: dict[str, int]) -> list[Mismatch]:
    """Topics whose partition count differs from the layout. Fewer partitions than declared is
    fatal (the consumer group and Faust tables expect the declared ones), and so is any
    difference in a co-partitioned (stage) topic; more partitions elsewhere is only reported."""
    layout = settings.topic_layout
    found = []
    for spec in ALL_TOPICS:
        name = spec.name(settings.topic_prefix)
        if name not in actual:
            continue
        declared = layout.partitions_of(spec)
        if actual[name] != declared:
            fatal = actual[name] < declared or spec in COPARTITIONED
            found.append(Mismatch(name, declared, actual[name], fatal))
    return found


def layout_error(settings: Settings, mismatches: list[Mismatch]) -> str:
    lines = "\n".join(f"  - {m.describe()}" for m in mismatches)
    return (
        f"Kafka topics on {settings.bootstrap} do not match the declared layout:\n{lines}\n"
        "Sluice will not run on them: a consumer group or a Faust table expecting the declared "
        "partitions would silently miss or mix records. Either add partitions to the topics "
        "(kafka-topics.sh --alter --partitions N; stage topics must all change together) or set "
        "SLUICE_STAGE_PARTITIONS / SLUICE_TOPIC_PARTITIONS to what the topics have."
    )


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    described: list[dict[str, Any]] = await admin.describe_topics(names)
    return {str(topic["topic"]): len(topic["partitions"]) for topic in described if topic["partitions"]}


def _new_topic(settings: Settings, spec: TopicSpec) -> NewTopic:
    layout = settings.topic_layout
    return NewTopic(
        name=spec.name(settings.topic_prefix),
        num_partitions=layout.partitions_of(spec),
        replication_factor=layout.replication_factor,
        topic_configs=layout.config_of(spec),
    )


async def _connected_admin(settings: Settings, attempts: int) -> AIOKafkaAdminClient:
    for attempt in range(1, attempts + 1):
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id="sluice-admin")
        try:
            await admin.start()
            return admin
        except KafkaConnectionError:
            await admin.close()
            if attempt == attempts:
                raise
            await asyncio.sleep(0.5)
    raise KafkaConnectionError(f"no broker at {settings.bootstrap}")


async def ensure_topics(settings: Settings, attempts: int = 30) -> list[str]:
    """Create every missing topic with the declared layout, then check the ones that existed;
    return the names created. Retries while the broker starts; raises TopicLayoutError when an
    existing topic has a layout Sluice cannot safely use."""
    admin = await _connected_admin(settings, attempts)
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in ALL_TOPICS if spec.name(settings.topic_prefix) not in existing]
        wanted = [_new_topic(settings, spec) for spec in missing]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently by another process")
        created = {topic.name for topic in wanted}
        names = [spec.name(settings.topic_prefix) for spec in ALL_TOPICS]
        mismatches = compare_layout(settings, await _partition_counts(admin, names))
        for mismatch in mismatches:
            if not mismatch.fatal:
                log.warning("topic layout differs (usable): %s", mismatch.describe())
        if fatal := [m for m in mismatches if m.fatal]:
            raise TopicLayoutError(layout_error(settings, fatal))
        return [name for name in names if name in created]
    finally:
        await admin.close()
