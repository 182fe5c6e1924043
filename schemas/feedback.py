"""A user's rating of one answer, on `sluice.feedback` (contract: Feedback)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.common import WireModel
from schemas.request import TENANT_PATTERN


class Feedback(WireModel):
    request_id: str = Field(min_length=1, max_length=128)
    tenant: str = Field(pattern=TENANT_PATTERN)
    rating: Literal[-1, 0, 1]
    label: str = Field(default="", max_length=64)
    comment: str | None = Field(default=None, max_length=4096)
