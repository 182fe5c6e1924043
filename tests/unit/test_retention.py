"""Retention settings reach every raw table and rollup on the real engine, the latest-rating and
route lookup tables of migration 0008 included."""

from __future__ import annotations

from sluice.settings import Settings
from sluice.warehouse.connection import connect
from sluice.warehouse.migrate import default_migrations_dir, migrate
from sluice.warehouse.monitors import RAW_TTL, ROLLUPS, apply_retention


async def test_changed_ttls_reach_every_table(settings: Settings) -> None:
    changed = settings.with_overrides(raw_ttl_days=7, rollup_ttl_days=90)
    warehouse = connect(changed)
    try:
        migrate(warehouse, default_migrations_dir())
        await apply_retention(warehouse, changed)
        engines = {
            str(row["name"]): str(row["engine_full"])
            for row in warehouse.query(
                "SELECT name, engine_full FROM system.tables WHERE database = {name:String}",
                {"name": warehouse.database},
            )
        }
    finally:
        warehouse.close()
    assert "feedback_latest" in ROLLUPS and "feedback_route_minute" in ROLLUPS
    for table in RAW_TTL:
        assert "toIntervalDay(7)" in engines[table], engines[table]
    for table in ROLLUPS:
        assert "toIntervalDay(90)" in engines[table], engines[table]
