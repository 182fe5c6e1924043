"""Kafka administration shared by every process: create the contract's topics at start-up."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from sluice import kafka_clients
from sluice.settings import Settings
from topics import ALL_TOPICS

log = logging.getLogger(__name__)


async def ensure_topics(settings: Settings, attempts: int = 30) -> list[str]:
    """Create every missing topic; return the names created. Retries while the broker starts."""
    for attempt in range(1, attempts + 1):
        admin = kafka_clients.admin(settings, client_id="sluice-admin")
        try:
            await admin.start()
        except KafkaConnectionError:
            await admin.close()
            if attempt == attempts:
                raise
            await asyncio.sleep(0.5)
            continue
        try:
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(
                    name=spec.name(settings.topic_prefix),
                    num_partitions=spec.partitions,
                    replication_factor=1,
                    topic_configs=spec.config(),
                )
                for spec in ALL_TOPICS
                if spec.name(settings.topic_prefix) not in existing
            ]
            if wanted:
                try:
                    await admin.create_topics(wanted)
                except TopicAlreadyExistsError:
                    log.info("topics were created concurrently by another process")
            return [topic.name for topic in wanted]
        finally:
            await admin.close()
    return []
