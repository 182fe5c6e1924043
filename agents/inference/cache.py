"""The exact-match response cache: which requests may use it, the key, and the bounded store.

A request uses the cache when its temperature is 0 or it opts in with metadata `cache: "true"`
(`cache: "false"` opts out even at temperature 0). Only first attempts read or write it: a
repair re-ask or a retry on a stronger model exists because an answer was not good enough.

The key is the tenant plus a SHA-256 of the normalised request: messages (role, content with
line endings unified and outer whitespace stripped), the requested model (or the routed tier for
`auto`), temperature, max_tokens, response_format and context passages. The tenant is both the
key's prefix and inside the hash, and a stored entry names its tenant, which `get` checks again:
tenants never share entries.

The store is any mutable mapping; the worker passes a Faust table's local data and a changelog
writer, so entries survive restarts. Entries expire after `ttl_s` and the oldest are evicted
beyond `max_entries`.

Limitation with several workers: an entry is written to the changelog partition of the record
that produced it, and each worker holds only the partitions it is assigned, so a repeat handled
by another worker can miss. That is a miss (one more model call), never a wrong answer.
The key is computed over the sanitized messages (what the model is sent): two requests that
differ only in redacted PII are the same request for the model, and share an entry within
their tenant; each answer is restored with its own request's redactions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from schemas import Envelope

CACHE_OPTION = "cache"  # request metadata key
_YES = {"true", "1", "yes", "on"}
_NO = {"false", "0", "no", "off"}
CACHEABLE_FINISH = {"stop", "length"}

Changelog = Callable[[int, str, dict[str, Any] | None], None]  # (partition, key, value or tombstone)


def cache_eligible(envelope: Envelope) -> bool:
    """May this request be answered from (and fill) the cache?"""
    if envelope.followup or envelope.retries or envelope.repair_attempts:
        return False
    request = envelope.request
    if request.tools or request.stop or any(m.role == "tool" or m.tool_calls for m in request.messages):
        return False  # the key holds role and text only; tool turns and stops would collide
    option = envelope.request.metadata.get(CACHE_OPTION, "").strip().lower()
    if option in _NO:
        return False
    return envelope.request.temperature == 0 or option in _YES


def _normal_text(text: str) -> str:
    return text.replace("\r\n", "\n").strip()


def cache_key(envelope: Envelope) -> str:
    """`<tenant>/<sha256 of the normalised request>`."""
    request = envelope.request
    model = request.model
    if model == "auto":
        model = f"auto:{envelope.route.tier}" if envelope.route and envelope.route.tier else "auto"
    response_format = request.response_format
    normal = {
        "tenant": envelope.tenant,
        "messages": [[m.role, _normal_text(m.content)] for m in request.messages],
        "model": model,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "response_format": (
            response_format.model_dump(exclude_none=True)
            if response_format is not None and response_format.type != "text"
            else None
        ),
        "context": [[p.id, _normal_text(p.text)] for p in request.context],
    }
    digest = hashlib.sha256(orjson.dumps(normal, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{envelope.tenant}/{digest}"


@dataclass(frozen=True)
class CachedAnswer:
    tenant: str
    model: str
    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    def to_value(self, at: float, partition: int) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "model": self.model,
            "content": self.content,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "at": at,
            "p": partition,
        }

    @classmethod
    def from_value(cls, value: Any) -> CachedAnswer | None:
        """A stored entry, or None for anything that is not one (never a wrong answer)."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                tenant=str(value["tenant"]),
                model=str(value["model"]),
                content=str(value["content"]),
                finish_reason=value["finish_reason"] if isinstance(value["finish_reason"], str) else None,
                prompt_tokens=int(value["prompt_tokens"]),
                completion_tokens=int(value["completion_tokens"]),
                cost_usd=float(value["cost_usd"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def cacheable(content: str | None, finish_reason: str | None) -> bool:
    """Only answers that completed normally are worth repeating."""
    return bool(content and content.strip()) and finish_reason in CACHEABLE_FINISH


class ResponseCache:
    """Bounded, expiring exact-match cache over a mapping (a Faust table's data in the worker)."""

    def __init__(
        self,
        store: MutableMapping[str, Any],
        ttl_s: float,
        max_entries: int,
        changelog: Changelog | None = None,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.changelog = changelog
        self.hits = 0
        self.misses = 0

    def get(self, key: str, tenant: str, now: float) -> CachedAnswer | None:
        value = self.store.get(key)
        answer = CachedAnswer.from_value(value)
        fresh = isinstance(value, dict) and float(value.get("at", 0.0)) >= now - self.ttl_s
        if answer is None or not fresh or answer.tenant != tenant:
            self.misses += 1
            return None
        self.hits += 1
        return answer

    def put(self, key: str, answer: CachedAnswer, now: float, partition: int = 0) -> None:
        value = answer.to_value(now, partition)
        self.store.pop(key, None)  # re-inserted at the end: eviction order is age of the write
        self.store[key] = value
        if self.changelog is not None:
            self.changelog(partition, key, value)
        while len(self.store) > self.max_entries:
            self._drop(next(iter(self.store)))

    def sweep(self, now: float) -> int:
        """Drop expired entries (the worker runs this on a timer)."""
        expired = [
            key
            for key, value in list(self.store.items())
            if not isinstance(value, dict) or float(value.get("at", 0.0)) < now - self.ttl_s
        ]
        for key in expired:
            self._drop(key)
        return len(expired)

    def _drop(self, key: str) -> None:
        value = self.store.pop(key, None)
        if self.changelog is not None:
            partition = int(value.get("p", 0)) if isinstance(value, dict) else 0
            self.changelog(partition, key, None)
