"""The topic layout is configuration, checked against the real broker at start-up."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from sluice.bus import TopicLayoutError, ensure_topics
from sluice.settings import Settings
from topics import ADMISSION, ALL_TOPICS, EVENTS, REQUESTS, RESPONSES

pytestmark = pytest.mark.e2e


async def partition_counts(settings: Settings) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        names = [spec.name(settings.topic_prefix) for spec in ALL_TOPICS]
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


async def test_topics_are_created_with_the_configured_counts(live_settings: Settings) -> None:
    settings = live_settings.with_overrides(stage_partitions=4, topic_partitions={"events": 3})
    created = await ensure_topics(settings)
    assert len(created) == len(ALL_TOPICS)
    counts = await partition_counts(settings)
    prefix = settings.topic_prefix
    assert counts[REQUESTS.name(prefix)] == counts[RESPONSES.name(prefix)] == 4
    assert counts[EVENTS.name(prefix)] == 3
    assert counts[ADMISSION.name(prefix)] == ADMISSION.partitions, "untouched topics keep topics/"
    assert await ensure_topics(settings) == [], "a second start creates nothing and passes the check"


async def test_fewer_partitions_than_declared_is_a_clear_startup_error(live_settings: Settings) -> None:
    await ensure_topics(live_settings)  # the defaults: 6 stage partitions
    wants_more = live_settings.with_overrides(stage_partitions=12)
    with pytest.raises(TopicLayoutError) as raised:
        await ensure_topics(wants_more)
    message = str(raised.value)
    assert f"{REQUESTS.name(live_settings.topic_prefix)}: 6 partitions, declared 12" in message
    assert "SLUICE_STAGE_PARTITIONS" in message


async def test_more_partitions_on_a_free_topic_is_usable_but_fewer_is_not(live_settings: Settings) -> None:
    await ensure_topics(live_settings.with_overrides(topic_partitions={"events": 8}))
    assert await ensure_topics(live_settings) == [], "events has 8 where 6 are declared: usable"
    with pytest.raises(TopicLayoutError, match=r"events: 8 partitions, declared 10"):
        await ensure_topics(live_settings.with_overrides(topic_partitions={"events": 10}))


def test_layout_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="set stage_partitions instead"):
        Settings(topic_partitions={"routed": 3})
    with pytest.raises(ValueError, match="unknown topic 'evnts'"):
        Settings(topic_partitions={"evnts": 3})
    with pytest.raises(ValueError, match="cannot exceed"):
        Settings(topic_replication_factor=1, topic_min_insync_replicas=2)
