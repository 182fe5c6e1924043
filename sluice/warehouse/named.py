"""A named analytics query: its name (the URL and CLI name), what it answers, and its SQL."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NamedQuery:
    name: str
    doc: str
    sql: str
