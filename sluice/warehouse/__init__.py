"""The ClickHouse side of Sluice: connection, migrations, the sink and the analytics queries.

Imports are light on purpose: `sluice dashboard` needs `open_for_reading` without the
Kafka client that the sink pulls in (import `sluice.warehouse.sink` for that).
"""

from sluice.warehouse.connection import Warehouse, WarehouseError, aconnect, connect, database_name
from sluice.warehouse.migrate import Migration, MigrationError, apply_migrations, migrate
from sluice.warehouse.queries import (
    QUERIES,
    NamedQuery,
    Reader,
    UnknownQuery,
    fetch_rows,
    open_for_reading,
    run_query,
)

__all__ = [
    "QUERIES",
    "Migration",
    "MigrationError",
    "NamedQuery",
    "Reader",
    "UnknownQuery",
    "Warehouse",
    "WarehouseError",
    "aconnect",
    "apply_migrations",
    "connect",
    "database_name",
    "fetch_rows",
    "migrate",
    "open_for_reading",
    "run_query",
]
