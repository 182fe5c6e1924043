"""The internal admission topic: accepted requests and finished requests' settlements, both
keyed by tenant, so one tenant's quota decisions happen in order on one partition."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, model_validator

from schemas.common import Status, WireModel
from schemas.envelope import Envelope


class Settlement(WireModel):
    """What a finished request actually cost: releases its reservation (idempotent by request_id)."""

    request_id: str
    tenant: str
    status: Status
    cost_usd: float = Field(default=0.0, ge=0)
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    finished_at: datetime
    expired: bool = Field(
        default=False,
        description="Sent by the sweep, not by a final outcome: the request never settled in time; "
        "charge its reservation in full (a late real settlement corrects it)",
    )


class Admission(WireModel):
    """Exactly one of: a validated request asking to be admitted, or a settlement."""

    request: Envelope | None = None
    settlement: Settlement | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Admission:
        if (self.request is None) == (self.settlement is None):
            raise ValueError("an admission record carries exactly one of request / settlement")
        return self
