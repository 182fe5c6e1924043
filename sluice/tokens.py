"""Prompt-token estimates before any model call (context-window fit, cost caps, budget holds).

One cheap rule, the same one the model simulator counts with: a token per 4 characters, rounded
up, at least one per non-empty text. Real tokenizers differ by model; this is an estimate for
decisions, never a bill (the provider's reported usage is what gets charged)."""

from __future__ import annotations

from collections.abc import Iterable

from schemas import Request

CHARS_PER_TOKEN = 4


def estimate_text_tokens(text: str) -> int:
    """Tokens in one text: ceil(len / 4), at least 1 unless the text is empty."""
    if not text:
        return 0
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def estimate_tokens(texts: Iterable[str]) -> int:
    """Tokens in several texts sent together (messages, retrieved passages)."""
    return sum(max(1, estimate_text_tokens(text)) for text in texts)


def estimate_prompt_tokens(request: Request) -> int:
    """What the request's prompt will cost in tokens: every message plus every context passage."""
    return estimate_tokens([m.content for m in request.messages] + [p.text for p in request.context])
