"""Migrations: applied in order, recorded, idempotent, database taken from settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from schemas import Feedback
from sluice.settings import Settings
from sluice.warehouse.connection import (
    Warehouse,
    WarehouseError,
    _server_dsn,
    connect,
    database_name,
    substitute_db,
)
from sluice.warehouse.metrics import QUANTILES, STAGE_QUANTILES, STAGE_SKETCH_ARGS
from sluice.warehouse.migrate import (
    MigrationError,
    applied_versions,
    apply_migrations,
    default_migrations_dir,
    load_migrations,
    migrate,
    split_statements,
)
from sluice.warehouse.sink import (
    TABLE_COLUMNS,
    columns_of,
    event_row,
    feedback_row,
    insert_event_json,
    insert_rows,
    request_row,
)
from sluice.warehouse.synthetic import synthetic_requests

EXPECTED_TABLES = {"events", "requests", "feedback", "deadletters", "schema_migrations"}


@pytest.fixture()
def warehouse(settings: Settings) -> Iterator[Warehouse]:
    client = connect(settings)
    yield client
    client.close()


def tables(warehouse: Warehouse) -> set[str]:
    rows = warehouse.query(
        "SELECT name FROM system.tables WHERE database = {name:String}", {"name": warehouse.database}
    )
    return {row["name"] for row in rows}


def test_default_folder_holds_numbered_files_that_use_the_placeholder() -> None:
    migrations = load_migrations(default_migrations_dir())
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert len(migrations) >= 4
    for migration in migrations:
        assert "{db}" in migration.sql, migration.path.name
        assert "sluice." not in migration.sql.replace("{db}.", ""), "database must not be hard-coded"


def test_apply_creates_tables_and_records_versions(warehouse: Warehouse, settings: Settings) -> None:
    applied = migrate(warehouse, default_migrations_dir())
    assert [m.version for m in applied] == [m.version for m in load_migrations(default_migrations_dir())]
    assert tables(warehouse) >= EXPECTED_TABLES
    recorded = applied_versions(warehouse)
    assert recorded == {m.version: m.checksum for m in applied}


def test_apply_twice_is_a_no_op(warehouse: Warehouse) -> None:
    migrate(warehouse, default_migrations_dir())
    before = warehouse.query("SELECT count() AS n FROM {db}.schema_migrations")[0]["n"]
    assert migrate(warehouse, default_migrations_dir()) == []
    after = warehouse.query("SELECT count() AS n FROM {db}.schema_migrations")[0]["n"]
    assert before == after


def test_apply_migrations_opens_its_own_connection(settings: Settings) -> None:
    assert len(apply_migrations(settings)) >= 4
    assert apply_migrations(settings) == []


def test_databases_are_isolated(settings: Settings, tmp_path: Path) -> None:
    """Each test keeps its own database on the shared chdb path; files never name one."""
    other = settings.with_overrides(clickhouse_database=settings.clickhouse_database + "_b")
    apply_migrations(settings)
    applied = apply_migrations(other)
    assert len(applied) >= 4  # a second database is migrated from scratch


def test_new_file_is_applied_later_in_order(warehouse: Warehouse, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_a.sql").write_text(
        "-- {db} comment; with a semicolon\n"
        "CREATE TABLE IF NOT EXISTS {db}.a (x String DEFAULT 'a;b') ENGINE = MergeTree ORDER BY x;\n"
        "INSERT INTO {db}.a (x) VALUES ('one');\n"
    )
    assert [m.version for m in migrate(warehouse, folder)] == [1]
    (folder / "0002_b.sql").write_text("ALTER TABLE {db}.a ADD COLUMN IF NOT EXISTS y UInt8 DEFAULT 7")
    assert [m.version for m in migrate(warehouse, folder)] == [2]
    assert warehouse.query("SELECT x, y FROM {db}.a") == [{"x": "one", "y": 7}]
    assert migrate(warehouse, folder) == []


def test_duplicate_versions_and_bad_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "01_b.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="share version 1"):
        load_migrations(tmp_path)
    (tmp_path / "01_b.sql").unlink()
    (tmp_path / "first.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match=r"0001_name\.sql"):
        load_migrations(tmp_path)


def test_split_statements_respects_quotes_and_comments() -> None:
    script = """
    -- leading comment; not a statement
    CREATE TABLE t (a String DEFAULT ';') ENGINE = Memory;
    /* block; comment */ INSERT INTO t VALUES ('it''s; fine'), ('back\\'slash;');
    ;
    SELECT `odd;name` FROM t
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[0].startswith("CREATE TABLE t")
    assert "'it''s; fine'" in statements[1]
    assert statements[2] == "SELECT `odd;name` FROM t"


def test_database_name_rules(settings: Settings) -> None:
    assert database_name(settings) == settings.clickhouse_database
    http = Settings(clickhouse_dsn="http://u:p@example.invalid:8123/analytics")
    assert database_name(http) == "analytics"
    no_path = Settings(clickhouse_dsn="http://u:p@example.invalid:8123", clickhouse_database="x")
    assert database_name(no_path) == "x"
    with pytest.raises(RuntimeError, match="invalid ClickHouse database"):
        substitute_db("SELECT 1 FROM {db}.t", "bad-name; DROP")


def test_server_dsn_drops_the_database_and_bad_targets_fail_clearly() -> None:
    assert _server_dsn("https://u:p@h:8443/db?compress=0") == "https://u:p@h:8443?compress=0"
    with pytest.raises(WarehouseError, match="unsupported"):
        connect(Settings(clickhouse_dsn="postgres://x/y"))
    with pytest.raises(WarehouseError, match="cannot open"):
        connect(Settings(clickhouse_dsn="http://default:@127.0.0.1:1/sluice"))


def _copy_migrations(into: Path, up_to: int) -> Path:
    into.mkdir()
    for migration in load_migrations(default_migrations_dir()):
        if migration.version <= up_to:
            (into / migration.path.name).write_text(migration.sql)
    return into


def test_0007_moves_existing_data_into_the_time_layout(warehouse: Warehouse, tmp_path: Path) -> None:
    """A warehouse at 0006 holding redelivered copies: 0007 keeps one copy of each row, sorts by
    time, attaches ratings to their requests and fills the hourly rollups from the minute ones."""
    migrate(warehouse, _copy_migrations(tmp_path / "old", 6))
    events = [e for request in synthetic_requests(40, spread_minutes=90) for e in request]
    for _ in range(2):  # every row twice, as redelivery left them in 0006's tables
        warehouse.insert("events", columns_of([event_row(e) for e in events]), TABLE_COLUMNS["events"])
        finals = [row for e in events if (row := request_row(e)) is not None]
        warehouse.insert("requests", columns_of(finals), TABLE_COLUMNS["requests"])
    first = events[0]
    rating = feedback_row(
        Feedback(request_id=first.request_id, tenant=first.tenant, rating=1), 0, 1, datetime.now(UTC)
    )
    warehouse.insert("feedback", columns_of([rating]), TABLE_COLUMNS["feedback"])

    applied = migrate(warehouse, _copy_migrations(tmp_path / "to7", 7))
    assert [m.version for m in applied] == [7]
    keys = {
        row["name"]: row["sorting_key"]
        for row in warehouse.query(
            "SELECT name, sorting_key FROM system.tables WHERE database = {name:String}",
            {"name": warehouse.database},
        )
    }
    assert keys["events"].startswith("toStartOfHour(ts)")
    assert keys["requests"].startswith("toStartOfHour(finished_at)")
    assert keys["feedback"].startswith("toStartOfHour(ts)")
    assert warehouse.query("SELECT count() AS n FROM {db}.events")[0]["n"] == len(events)
    assert warehouse.query("SELECT count() AS n FROM {db}.requests")[0]["n"] == 40
    final = next(e for e in events if e.request_id == events[0].request_id and e.summary is not None)
    assert final.summary is not None
    expected = [{"model": final.model, "route": final.summary.route}]
    assert warehouse.query("SELECT model, route FROM {db}.feedback") == expected
    minute = warehouse.query("SELECT sum(t.requests) AS n FROM {db}.request_minute AS t")[0]["n"]
    hour = warehouse.query("SELECT sum(t.requests) AS n FROM {db}.request_hour AS t")[0]["n"]
    # 0006's views counted the copies; the hourly backfill sums the minute rollups as they are.
    assert hour == minute == 80

    # After the upgrade the sink's path drops copies.
    more = [e for request in synthetic_requests(5, spread_minutes=5, prefix="new") for e in request]
    for _ in range(2):
        insert_rows(warehouse, "events", [event_row(e) for e in more])
    assert warehouse.query("SELECT count() AS n FROM {db}.events")[0]["n"] == len(events) + len(more)


def test_0008_counts_only_the_latest_rating_of_existing_data(warehouse: Warehouse, tmp_path: Path) -> None:
    """A warehouse at 0007 where a request was rated twice: after 0008 only the later rating counts
    in the rollups, and feedback_latest holds it."""
    migrate(warehouse, _copy_migrations(tmp_path / "old", 7))
    events = [e for request in synthetic_requests(2, spread_minutes=30, ago_minutes=5) for e in request]
    insert_rows(warehouse, "events", [event_row(e) for e in events])
    insert_rows(warehouse, "requests", [row for e in events if (row := request_row(e)) is not None])
    first, second = events[0], events[-1]
    now = datetime.now(UTC)
    ratings = [
        feedback_row(Feedback(request_id=first.request_id, tenant=first.tenant, rating=-1), 0, 1, now),
        feedback_row(Feedback(request_id=first.request_id, tenant=first.tenant, rating=1), 0, 2, now),
        feedback_row(Feedback(request_id=second.request_id, tenant=second.tenant, rating=-1), 0, 3, now),
    ]
    insert_rows(warehouse, "feedback", ratings[:1])
    insert_rows(warehouse, "feedback", ratings[1:])
    before = warehouse.query("SELECT sum(messages) AS n FROM {db}.feedback_hour")[0]["n"]
    assert before == 3  # 0007 counted every rating

    assert [m.version for m in migrate(warehouse, _copy_migrations(tmp_path / "to8", 8))] == [8]
    for table in ("feedback_minute", "feedback_hour"):
        figures = warehouse.query(f"SELECT sum(messages) AS n, sum(rating_sum) AS total FROM {{db}}.{table}")
        assert figures == [{"n": 2, "total": 0}], table
    latest = warehouse.query("SELECT request_id, rating FROM {db}.feedback_latest FINAL ORDER BY rating")
    assert latest == [
        {"request_id": second.request_id, "rating": -1},
        {"request_id": first.request_id, "rating": 1},
    ]


def test_a_failed_migration_resumes_where_it_failed(warehouse: Warehouse, tmp_path: Path) -> None:
    folder = tmp_path / "resume"
    folder.mkdir()
    (folder / "0001_resume.sql").write_text(
        "CREATE TABLE {db}.t (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
        "INSERT INTO {db}.t VALUES (1);\n"  # not idempotent: must not run twice
        "INSERT INTO {db}.t SELECT x FROM {db}.missing;\n"
        "INSERT INTO {db}.t VALUES (3)"
    )
    with pytest.raises(DatabaseError):
        migrate(warehouse, folder)
    assert applied_versions(warehouse) == {}
    warehouse.command("CREATE TABLE {db}.missing (x UInt8) ENGINE = MergeTree ORDER BY x")
    warehouse.command("INSERT INTO {db}.missing VALUES (2)")
    assert [m.version for m in migrate(warehouse, folder)] == [1]
    assert sorted(row["x"] for row in warehouse.query("SELECT x FROM {db}.t")) == [1, 2, 3]


def test_0010_keys_stage_minute_by_what_reads_it(warehouse: Warehouse, tmp_path: Path) -> None:
    """A warehouse at 0009 with stage events of several tenants: after 0010 the minute rollup has
    no tenant or error code, holds the same counts (fewer rows), and the views still feed it and
    the hourly rollup."""
    migrate(warehouse, _copy_migrations(tmp_path / "to9", 9))
    events = [e for request in synthetic_requests(60, spread_minutes=20, ago_minutes=5) for e in request]
    insert_rows(warehouse, "events", [event_row(e) for e in events])
    count = "SELECT sum(t.events) AS n, count() AS stored FROM {db}.stage_minute AS t"
    before = warehouse.query(count)[0]
    assert [m.version for m in migrate(warehouse, _copy_migrations(tmp_path / "to10", 10))] == [10]
    after = warehouse.query(count)[0]
    assert after["n"] == before["n"] == len(events)
    assert after["stored"] < before["stored"]
    columns = {
        row["name"]
        for row in warehouse.query(
            "SELECT name FROM system.columns WHERE database = {name:String} AND table = 'stage_minute'",
            {"name": warehouse.database},
        )
    }
    assert "tenant" not in columns and "error_code" not in columns
    more = [e for request in synthetic_requests(5, spread_minutes=5, prefix="new") for e in request]
    insert_rows(warehouse, "events", [event_row(e) for e in more])
    for table in ("stage_minute", "stage_hour"):
        total = warehouse.query(f"SELECT sum(t.events) AS n FROM {{db}}.{table} AS t")[0]["n"]
        assert total == len(events) + len(more), table


STAGE_AND_REQUEST_COUNTS = {
    "stage_minute": "events",
    "stage_hour": "events",
    "request_minute": "requests",
    "request_hour": "requests",
}


def _rollup_counts(warehouse: Warehouse) -> dict[str, int]:
    return {
        table: int(warehouse.query(f"SELECT sum(t.{column}) AS n FROM {{db}}.{table} AS t")[0]["n"])
        for table, column in STAGE_AND_REQUEST_COUNTS.items()
    }


def test_0012_stage_sketches_and_small_request_granules(warehouse: Warehouse, tmp_path: Path) -> None:
    """A warehouse at 0011 with stored events and requests: after 0012 the stage rollups keep
    their counts and their duration quantiles are DDSketch merges equal to the sketch of the raw
    durations; the request minute rollup keeps its rows, t-digests included, and reads in
    granules of 256 rows; the views still feed all four tables."""
    migrate(warehouse, _copy_migrations(tmp_path / "to11", 11))
    events = [e for request in synthetic_requests(60, spread_minutes=20, ago_minutes=5) for e in request]
    insert_rows(warehouse, "events", [event_row(e) for e in events])
    insert_rows(warehouse, "requests", [row for e in events if (row := request_row(e)) is not None])
    before = _rollup_counts(warehouse)
    assert before["request_minute"] == 60 and before["stage_minute"] == len(events)
    latency = f"SELECT {QUANTILES}(t.latency_ms) AS q FROM {{db}}.request_minute AS t"
    request_quantiles = warehouse.query(latency)[0]["q"]
    assert [m.version for m in migrate(warehouse, _copy_migrations(tmp_path / "to12", 12))] == [12]
    assert _rollup_counts(warehouse) == before
    assert warehouse.query(latency)[0]["q"] == request_quantiles
    sketch = f"quantilesDD({STAGE_SKETCH_ARGS})"
    raw = warehouse.query(f"SELECT {sketch}(e.duration_ms) AS q FROM {{db}}.events AS e")
    for table in ("stage_minute", "stage_hour"):
        rolled = warehouse.query(f"SELECT {STAGE_QUANTILES}(t.duration_ms) AS q FROM {{db}}.{table} AS t")
        assert rolled == raw and raw[0]["q"][0] > 0, table
    engine = warehouse.query(
        "SELECT engine_full FROM system.tables WHERE database = {name:String} AND name = 'request_minute'",
        {"name": warehouse.database},
    )[0]["engine_full"]
    assert "index_granularity = 256" in engine
    more = [e for request in synthetic_requests(5, spread_minutes=5, prefix="new") for e in request]
    insert_rows(warehouse, "events", [event_row(e) for e in more])
    insert_rows(warehouse, "requests", [row for e in more if (row := request_row(e)) is not None])
    after = _rollup_counts(warehouse)
    assert after["request_minute"] == after["request_hour"] == 65
    assert after["stage_minute"] == after["stage_hour"] == len(events) + len(more)


def _part_layouts(warehouse: Warehouse, table: str) -> set[tuple[int, str]]:
    rows = warehouse.query(
        "SELECT level, part_storage_type AS storage FROM system.parts"
        " WHERE database = {name:String} AND table = {table:String} AND active",
        {"name": warehouse.database, "table": table},
    )
    return {(min(int(row["level"]), 1), str(row["storage"])) for row in rows}  # 1: merged


def test_0013_writes_inserted_parts_packed_and_merged_parts_full(settings: Settings) -> None:
    """After 0013 every data table writes an insert's part as one file and a merged part in the
    full layout, and packed parts read back the same after the engine is opened again. (An
    insert with `optimize_on_insert`, the default, writes Replacing and Aggregating parts at
    level 1 already, so only the sink's insert, which turns it off, writes packed parts.)"""
    events = [e for request in synthetic_requests(30, spread_minutes=10, ago_minutes=5) for e in request]
    counted = "SELECT count() AS n, sum(e.cost_usd) AS cost FROM {db}.events AS e"
    with closing(connect(settings)) as warehouse:
        migrate(warehouse, default_migrations_dir())
        stored = warehouse.query(
            "SELECT name, engine_full FROM system.tables WHERE database = {name:String}"
            " AND engine LIKE '%MergeTree' AND name NOT LIKE 'schema_%'",
            {"name": warehouse.database},
        )
        assert len(stored) >= 16
        setting = "min_level_for_full_part_storage = 1"
        assert [r["name"] for r in stored if setting not in r["engine_full"]] == []
        insert_event_json(warehouse, [e.model_dump_json().encode() for e in events[::2]])  # the sink's insert
        assert _part_layouts(warehouse, "events") == {(0, "Packed")}
        assert _part_layouts(warehouse, "requests") == {(0, "Packed")}
        before = warehouse.query(counted)
    with closing(connect(settings)) as warehouse:  # the packed parts are loaded from disk again
        assert warehouse.query(counted) == before and before[0]["n"] == len(events[::2])
        insert_rows(warehouse, "events", [event_row(e) for e in events[1::2]])
        warehouse.command("OPTIMIZE TABLE {db}.events FINAL")
        assert _part_layouts(warehouse, "events") == {(1, "Full")}
        assert warehouse.query(counted)[0]["n"] == len(events)
