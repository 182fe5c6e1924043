"""Numbered SQL migrations (`NNNN_name.sql`), applied in order and recorded in `schema_migrations`.

The files name the database as `{db}`; the runner substitutes the configured one, so the
tests can keep a database per test on one shared chdb path. Applying is idempotent: a
version already recorded is skipped. ClickHouse has no transactional DDL to roll back a
half-applied file, so every completed statement is recorded too (`schema_migration_steps`)
and a file that failed half-way resumes at the statement that failed; statements are still
written to be re-runnable (IF NOT EXISTS) where ClickHouse allows it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from sluice.settings import Settings
from sluice.warehouse.connection import Warehouse, connect

log = logging.getLogger(__name__)

MIGRATION_FILE = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9_\-]+)\.sql$")

BOOTSTRAP_SQL = (
    "CREATE DATABASE IF NOT EXISTS {db}",
    """CREATE TABLE IF NOT EXISTS {db}.schema_migrations
    (
        version    UInt32,
        name       String,
        checksum   String,
        applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
    )
    ENGINE = ReplacingMergeTree(applied_at)
    ORDER BY version""",
    """CREATE TABLE IF NOT EXISTS {db}.schema_migration_steps
    (
        version    UInt32,
        step       UInt32,
        applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
    )
    ENGINE = ReplacingMergeTree(applied_at)
    ORDER BY (version, step)""",
)


class MigrationError(RuntimeError):
    """The migrations folder is inconsistent (duplicate or unparsable versions)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        return split_statements(self.sql)


def default_migrations_dir() -> Path:
    """`<repo>/infra/clickhouse/migrations`, found from this file (editable install / checkout)."""
    return Path(__file__).resolve().parents[2] / "infra" / "clickhouse" / "migrations"


def migrations_dir(settings: Settings) -> Path:
    return settings.migrations_dir or default_migrations_dir()


def load_migrations(directory: Path) -> list[Migration]:
    """Every `NNNN_name.sql` in `directory`, by version; other files are ignored."""
    if not directory.is_dir():
        raise MigrationError(f"migrations folder not found: {directory}")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"migration file name must look like 0001_name.sql: {path.name}")
        version = int(match["version"])
        if version in found:
            raise MigrationError(
                f"two migrations share version {version}: {found[version].path.name}, {path.name}"
            )
        found[version] = Migration(version, match["name"], path, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def split_statements(sql: str) -> list[str]:
    """Split a script on `;` outside quotes and comments (the HTTP interface runs one statement
    per request). Comment-only fragments are dropped."""
    statements: list[str] = []
    current: list[str] = []
    has_code = False
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
            current.append("\n")
            continue
        if sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end == -1 else end + 2
            current.append(" ")
            continue
        if char in "'\"`":
            j = i + 1
            while j < n and sql[j] != char:
                j += 2 if sql[j] == "\\" else 1
            current.append(sql[i : j + 1])
            has_code = True
            i = j + 1
            continue
        if char == ";":
            if has_code:
                statements.append("".join(current).strip())
            current, has_code = [], False
            i += 1
            continue
        current.append(char)
        has_code = has_code or not char.isspace()
        i += 1
    if has_code:
        statements.append("".join(current).strip())
    return statements


def applied_versions(warehouse: Warehouse) -> dict[int, str]:
    """Recorded versions and the checksum each was applied with."""
    rows = warehouse.query(
        "SELECT version, argMax(checksum, applied_at) AS checksum"
        " FROM {db}.schema_migrations GROUP BY version"
    )
    return {int(row["version"]): str(row["checksum"]) for row in rows}


def applied_steps(warehouse: Warehouse, version: int) -> set[int]:
    """Statements of a not yet recorded version that completed in an earlier, failed run."""
    rows = warehouse.query(
        "SELECT DISTINCT step FROM {db}.schema_migration_steps WHERE version = {version:UInt32}",
        parameters={"version": version},
    )
    return {int(row["step"]) for row in rows}


def migrate(warehouse: Warehouse, directory: Path) -> list[Migration]:
    """Apply the migrations not yet recorded, in version order; return those applied now."""
    migrations = load_migrations(directory)
    for statement in BOOTSTRAP_SQL:
        warehouse.command(statement)
    done = applied_versions(warehouse)
    applied: list[Migration] = []
    for migration in migrations:
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                log.warning(
                    "migration %s was edited after it was applied; edits are not re-run, add a new file",
                    migration.path.name,
                )
            continue
        finished = applied_steps(warehouse, migration.version)
        for step, statement in enumerate(migration.statements()):
            if step in finished:
                continue
            warehouse.command(statement)
            warehouse.insert("schema_migration_steps", [[migration.version], [step]], ["version", "step"])
        warehouse.insert(
            "schema_migrations",
            [[migration.version], [migration.name], [migration.checksum]],
            ["version", "name", "checksum"],
        )
        log.info("applied migration %s to %s", migration.path.name, warehouse.database)
        applied.append(migration)
    return applied


async def amigrate(warehouse: Warehouse, directory: Path) -> list[Migration]:
    """migrate() off the event loop."""
    return await asyncio.to_thread(migrate, warehouse, directory)


def apply_migrations(settings: Settings) -> list[Migration]:
    """Open the warehouse, migrate it, close it: what `sluice migrate` runs.

    With chdb this fails while another process (a running sink) holds the path.
    """
    warehouse = connect(settings)
    try:
        return migrate(warehouse, migrations_dir(settings))
    finally:
        warehouse.close()
