"""sanitize: make text safe to pass on. Unicode NFKC normalisation and removal of control and
zero-width characters, so look-alike and invisible characters cannot smuggle instructions past
later checks or into the model."""

from __future__ import annotations

import re
import time
import unicodedata
from datetime import datetime

from schemas import Envelope, Stage
from sluice.outcome import Outcome, forward

STAGE = Stage.SANITIZE

# C0/C1 controls except \t \n \r; zero-width and bidi formatting characters.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


def normalize_text(text: str) -> str:
    """NFKC, then strip invisible characters; idempotent."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))


def sanitize(envelope: Envelope, now: datetime) -> Outcome:
    started = time.perf_counter()
    request = envelope.request
    removed = 0
    messages = []
    for message in request.messages:
        clean = normalize_text(message.content)
        removed += len(message.content) - len(clean)
        messages.append(message.model_copy(update={"content": clean}))
    passages = []
    for passage in request.context:
        clean = normalize_text(passage.text)
        removed += len(passage.text) - len(clean)
        passages.append(passage.model_copy(update={"text": clean}))
    cleaned = envelope.model_copy(
        update={"request": request.model_copy(update={"messages": messages, "context": passages})}
    )
    return forward(
        cleaned,
        STAGE,
        now=now,
        duration_ms=(time.perf_counter() - started) * 1000,
        attributes={"chars_removed": str(removed)},
    )
