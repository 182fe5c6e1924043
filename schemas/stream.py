"""A piece of a streamed answer, on the `sluice.stream` topic keyed by correlation_id (contract:
StreamChunk). The request's Response on its reply topic still ends every request, streamed or
not: it carries the whole released text, usage, cost, checks and finish_reason."""

from __future__ import annotations

from pydantic import Field

from schemas.common import WireModel


class StreamChunk(WireModel):
    """Text that passed the stream's checks, in order: `seq` counts from 0 per request; `offset`
    is where `delta` starts in the released text, so a reader can drop a repeated record."""

    correlation_id: str
    request_id: str
    tenant: str
    model: str = Field(description="The model writing the answer")
    seq: int = Field(ge=0)
    offset: int = Field(ge=0)
    delta: str
