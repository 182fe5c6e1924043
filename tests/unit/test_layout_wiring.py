"""The configured topic layout reaches Faust: changelog partitions follow their tables' topics,
changelogs get the replication and min.insync.replicas of the settings, tables their standbys."""

from __future__ import annotations

from pathlib import Path

from sluice.settings import Settings
from sluice.worker import build_pipeline
from topics import ADMISSION, REQUESTS, RESPONSES


def test_faust_tables_and_changelogs_follow_the_layout(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        stage_partitions=12,
        topic_partitions={"admission": 3},
        topic_replication_factor=3,
        topic_min_insync_replicas=2,
        table_standby_replicas=1,
    )
    pipeline = build_pipeline(settings)
    app = pipeline.app
    assert app.conf.topic_replication_factor == 3
    assert app.conf.table_standby_replicas == 1
    assert pipeline.requests.partitions == 12
    assert pipeline.replies.changelog_topic.get_topic_name() == RESPONSES.name(settings.topic_prefix)
    assert pipeline.seen.partitions == pipeline.replies.partitions == 12
    assert pipeline.quota.partitions == 3, ADMISSION.suffix
    for table in app.tables.values():
        assert table.changelog_topic.config["min.insync.replicas"] == "2", table.name


def test_defaults_come_from_topics(tmp_path: Path) -> None:
    pipeline = build_pipeline(Settings(home=tmp_path))
    assert pipeline.requests.partitions == REQUESTS.partitions
    assert pipeline.app.conf.topic_replication_factor == 1
