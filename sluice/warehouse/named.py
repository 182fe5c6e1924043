"""A named analytics query: its name (the URL and CLI name), what it answers, and its SQL."""

from __future__ import annotations

from dataclasses import dataclass

# Windows this long or longer read the hourly rollups (when the query has an hourly form).
HOURLY_FROM_MINUTES = 24 * 60


@dataclass(frozen=True)
class NamedQuery:
    name: str
    doc: str
    sql: str
    hourly_sql: str = ""  # the same figures from the hourly rollups, for long windows

    def sql_for(self, minutes: int) -> str:
        """The SQL to run for a window of `minutes`: hourly rollups from 24 hours on."""
        return self.hourly_sql if self.hourly_sql and minutes >= HOURLY_FROM_MINUTES else self.sql
