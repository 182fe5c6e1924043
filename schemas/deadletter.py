"""A message no stage could even read, parked on `sluice.deadletter` for operators."""

from __future__ import annotations

from datetime import datetime

from schemas.common import WireModel


class DeadLetter(WireModel):
    reason: str
    raw_base64: str
    source_topic: str
    partition: int
    offset: int
    stage: str
    ts: datetime
