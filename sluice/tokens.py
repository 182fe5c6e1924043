"""Token counts before a model call: a typical estimate (for routing, context-window fit and rate
limits) and a bound no real tokenizer exceeds (for budget reservations, which must never be too
small).

No tokenizer is loaded: counts differ by model anyway, and both numbers are only needed before
the call; the model's reported usage replaces them afterwards. The typical rule is the one the
model simulator counts with: a token per 4 characters, rounded up, at least one per non-empty
text."""

from __future__ import annotations

from collections.abc import Iterable

from schemas import Request

CHARS_PER_TOKEN = 4  # English prose on GPT-style tokenizers, and the simulator's own count
MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators per message or context passage
PROMPT_OVERHEAD_TOKENS = 64  # system framing the infer stage adds around context passages


def estimate_text_tokens(text: str) -> int:
    """Tokens in one text: ceil(len / 4), at least 1 unless the text is empty."""
    if not text:
        return 0
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def estimate_tokens(texts: Iterable[str]) -> int:
    """Tokens in several texts sent together (messages, retrieved passages)."""
    return sum(max(1, estimate_text_tokens(text)) for text in texts)


def _texts(request: Request) -> Iterable[str]:
    yield from (message.content for message in request.messages)
    yield from (passage.text for passage in request.context)


def estimate_prompt_tokens(request: Request) -> int:
    """What the request's prompt will typically cost in tokens: every message and passage."""
    return estimate_tokens(_texts(request))


def prompt_token_bound(request: Request, extra_texts: Iterable[str] = ()) -> int:
    """At least as many tokens as any byte-level BPE tokenizer produces: every token covers at
    least one UTF-8 byte, so bytes plus framing overhead is an upper bound."""
    parts = [*_texts(request), *extra_texts]
    size = sum(len(text.encode("utf-8", "surrogatepass")) for text in parts)
    return size + MESSAGE_OVERHEAD_TOKENS * len(parts) + PROMPT_OVERHEAD_TOKENS
