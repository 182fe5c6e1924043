"""ClickHouse clients from settings: the embedded chdb engine or a real server over HTTP(S).

chdb has no async client and one engine handle must not be driven from two threads at
once, so every call goes through `Warehouse`, which serialises calls with a lock and
offers `a*` coroutines that run the blocking call in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse, urlunparse

import clickhouse_connect

from sluice.settings import Settings

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class WarehouseError(RuntimeError):
    """The warehouse is misconfigured or cannot be reached."""


def is_embedded(dsn: str) -> bool:
    """True for the in-process chdb engine, which only one process may open per path."""
    return dsn.startswith("chdb:")


def chdb_path(dsn: str) -> str | None:
    """The data directory of a `chdb://` DSN (None for an in-memory engine)."""
    parsed = urlparse(dsn)
    return None if parsed.netloc or not parsed.path else parsed.path


def database_name(settings: Settings) -> str:
    """The database all Sluice tables live in: the one named in an
    `http(s)://user:pass@host:port/db` DSN, else settings.clickhouse_database (default `sluice`).
    For chdb the DSN path is the data directory, so clickhouse_database always applies."""
    name = settings.clickhouse_database
    dsn = settings.warehouse_dsn
    if not is_embedded(dsn):
        name = urlparse(dsn).path.strip("/").split("/")[0] or name
    if not _IDENTIFIER.match(name):
        raise WarehouseError(f"invalid ClickHouse database name {name!r}")
    return name


def substitute_db(sql: str, database: str) -> str:
    """Put the database into SQL written with the `{db}` placeholder.

    Plain replacement, not str.format: SQL also holds `{name:Type}` query parameters.
    """
    if not _IDENTIFIER.match(database):
        raise WarehouseError(f"invalid ClickHouse database name {database!r}")
    return sql.replace("{db}", f"`{database}`")


class Warehouse:
    """One clickhouse-connect client, its database, and the lock serialising calls on it."""

    def __init__(self, client: Any, database: str, dsn: str) -> None:
        self.client = client
        self.database = database
        self.embedded = is_embedded(dsn)
        self._lock = threading.Lock()

    # --- blocking calls (safe from any thread) -------------------------------------------
    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """Run one statement that returns no rows (DDL, ALTER, ...)."""
        with self._lock:
            return self.client.command(substitute_db(sql, self.database), parameters=parameters)

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Run a SELECT and return its rows as dicts keyed by column name; `summary`, when
        given, is filled with the engine's figures for the query (read_rows, elapsed_ns, ...)."""
        with self._lock:
            result = self.client.query(substitute_db(sql, self.database), parameters=parameters)
        if summary is not None:
            summary.update(result.summary or {})
        names = list(result.column_names)
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    def read_statistics(self, sql: str, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run a SELECT for its cost: the engine's own figures (rows_read, bytes_read, elapsed) from
        the JSON output format. Works the same embedded and over HTTP (chdb keeps no query_log and
        its query summary counts result rows, not rows read)."""
        with self._lock:
            raw = self.client.raw_query(substitute_db(sql, self.database), parameters=parameters, fmt="JSON")
        statistics: dict[str, Any] = json.loads(raw).get("statistics", {})
        return statistics

    def insert(self, table: str, columns: Sequence[Sequence[Any]], column_names: Sequence[str]) -> int:
        """Column-oriented insert into `table` of this database; returns the rows written."""
        if not columns or not columns[0]:
            return 0
        with self._lock:
            self.client.insert(
                f"{self.database}.{table}",
                list(columns),
                column_names=list(column_names),
                column_oriented=True,
            )
        return len(columns[0])

    def insert_raw(self, table: str, data: bytes, fmt: str, settings: Mapping[str, Any]) -> None:
        """Hand `data`, already in ClickHouse input format `fmt`, to the engine as one insert into
        `table` of this database: the engine parses it, Python converts nothing."""
        if not data:
            return
        with self._lock:
            target = f"{self.database}.{table}"
            self.client.raw_insert(target, insert_block=data, fmt=fmt, settings=dict(settings))

    def close(self) -> None:
        with self._lock:
            self.client.close()

    # --- async wrappers: the blocking call runs in a worker thread ------------------------
    async def acommand(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self.command, sql, parameters)

    async def aquery(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.query, sql, parameters)

    async def ainsert(self, table: str, columns: Sequence[Sequence[Any]], column_names: Sequence[str]) -> int:
        return await asyncio.to_thread(self.insert, table, columns, column_names)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


def _server_dsn(dsn: str) -> str:
    """The DSN without its database path: the database may not exist before migrations run."""
    parsed = urlparse(dsn)
    return urlunparse(parsed._replace(path=""))


def connect(settings: Settings) -> Warehouse:
    """A Warehouse for settings.warehouse_dsn (blocking: chdb opens its engine here).

    The client has no default database; SQL names tables as `{db}.table`, so the same
    client can create the database and the tests can keep one database per test.
    """
    dsn = settings.warehouse_dsn
    database = database_name(settings)
    try:
        if is_embedded(dsn):
            parsed = urlparse(dsn)
            # Keep only the location: a `chdb://memory/db` path would be taken as the database.
            target = dsn if not parsed.netloc else f"chdb://{parsed.netloc}"
            client = clickhouse_connect.get_client(dsn=target)
        elif dsn.startswith(("http://", "https://")):
            client = clickhouse_connect.get_client(dsn=_server_dsn(dsn))
        else:
            raise WarehouseError(
                f"unsupported ClickHouse DSN scheme (want chdb:// or http(s)://): {dsn.split(':')[0]}"
            )
    except WarehouseError:
        raise
    except Exception as exc:  # clickhouse-connect raises many types; callers need one.
        if is_embedded(dsn):  # chdb prints the lock conflict to stderr only; say the likely cause
            raise WarehouseError(
                f"cannot open the embedded warehouse at {chdb_path(dsn)}: only one process may hold it "
                f"(a running sink?); read through its query server or stop it first. ({exc})"
            ) from exc
        raise WarehouseError(f"cannot open the warehouse: {exc}") from exc
    return Warehouse(client, database, dsn)


async def aconnect(settings: Settings) -> Warehouse:
    """connect() off the event loop (opening chdb takes ~0.5 s)."""
    return await asyncio.to_thread(connect, settings)
