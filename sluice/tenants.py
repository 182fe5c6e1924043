"""Per-tenant configuration (`[tenants.<id>]` in sluice.toml, or SLUICE_TENANTS as JSON).

A tenant without an entry gets the defaults, so the embedded `demo` tenant works untouched."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas import ErrorCode

ActionName = Literal["pass", "flag", "retry", "block"]


class OutputRules(BaseModel):
    """What validate-response enforces on this tenant's answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = ""
    domain_keywords: tuple[str, ...] = ()
    brand_names: tuple[str, ...] = ()
    allow_creative: bool = False
    banned_terms: tuple[str, ...] = ()
    competitors: tuple[str, ...] = ()
    profanity: tuple[str, ...] = ()
    hallucination_threshold: float = Field(default=0.65, ge=0.0, le=1.0)
    safe_message: str = "Sorry, I can't help with that. Please rephrase your request or contact support."
    actions: dict[str, ActionName] = Field(
        default_factory=dict, description="check name -> action, overriding the defaults"
    )
    max_retries: int = Field(default=1, ge=0, le=3)
    max_repair_attempts: int = Field(default=1, ge=0, le=3)
    stream_checks: Literal["windowed", "buffered"] = Field(
        default="windowed",
        description="Streamed answers: windowed releases text once a window of sentences has "
        "passed the checks; buffered holds the whole answer until every check has passed",
    )
    stream_window_sentences: int = Field(
        default=1,
        ge=0,
        le=5,
        description="Whole sentences held back and checked before release; 0 holds back only the "
        "unfinished word (faster first chunk, but a leak spanning words may show its first words)",
    )


class InputRules(BaseModel):
    """What the sanitize stage does with this tenant's prompts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the sanitizer policy, e.g. "
        '{"injection": {"block_threshold": 0.95}, "pii": {"actions": {"CARD": "block"}}}',
    )
    restore_pii: bool = Field(default=False, description="Put redacted values back into the answer")
    store_redacted_text: bool = Field(
        default=False,
        description="Keep the redacted prompt in ClickHouse (default: sizes, hashes, scores only)",
    )


API_KEY_PREFIX = "sk-sluice-"
DEFAULT_TENANT_ID = "demo"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def hash_key(api_key: str) -> str:
    """The hex SHA-256 of an API key: the only form in which keys are ever stored."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()


def new_api_key() -> str:
    """A fresh random API key (shown once to its owner; only its hash is kept)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def _matches(digest: str, hashes: tuple[str, ...]) -> bool:
    """Constant-time membership: every stored hash is compared, whatever matched first."""
    found = False
    for stored in hashes:
        found |= hmac.compare_digest(digest, stored)
    return found


class AccessRules(BaseModel):
    """Who may use this tenant, and for what (checked by the validate stage)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key_sha256: tuple[str, ...] = Field(
        default=(), description="Hex SHA-256 of each accepted API key; empty: no key needed"
    )
    allowed_models: tuple[str, ...] = Field(
        default=(), description="Model names (or 'auto') this tenant may ask for; empty: all"
    )
    max_prompt_bytes: int | None = Field(
        default=None, ge=1, description="Limit on the UTF-8 bytes of all message contents"
    )
    max_cost_per_request_usd: float | None = Field(
        default=None,
        gt=0,
        description="The router only picks models whose worst-case cost (estimated prompt tokens, "
        "max_tokens of completion) stays within this; None: no limit",
    )

    @field_validator("api_key_sha256")
    @classmethod
    def _hex_digests(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        digests = tuple(item.strip().lower() for item in value)
        if not all(_SHA256_HEX.match(item) for item in digests):
            raise ValueError("each entry must be a hex SHA-256 digest (64 hex characters)")
        return digests


class QuotaRules(BaseModel):
    """Rate limits and the daily budget (enforced by the admit step after validate). A limit
    left unset is not enforced; usage is still counted, so setting one later starts informed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Requests admitted per quota window (quota_window_s, 60 s by default)"
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Tokens per quota window: estimated before the call, corrected by actual usage after",
    )
    daily_budget_usd: float | None = Field(
        default=None, ge=0, description="Spend per UTC day, with every in-flight request at its worst case"
    )

    @property
    def limited(self) -> bool:
        limits = (self.requests_per_minute, self.tokens_per_minute, self.daily_budget_usd)
        return any(limit is not None for limit in limits)


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: InputRules = Field(default_factory=InputRules)
    output: OutputRules = Field(default_factory=OutputRules)
    access: AccessRules = Field(default_factory=AccessRules)
    quota: QuotaRules = Field(default_factory=QuotaRules)

    @property
    def requires_key(self) -> bool:
        return bool(self.access.api_key_sha256)

    def accepts(self, api_key: str | None) -> bool:
        """Whether a request with this key (None: no key) may use the tenant."""
        if not self.requires_key:
            return True
        if api_key is None:
            return False
        return _matches(hash_key(api_key), self.access.api_key_sha256)


DEFAULT_TENANT = TenantConfig()


def tenant_resolver(
    tenants: Mapping[str, TenantConfig], default_tenant: str = DEFAULT_TENANT_ID
) -> Callable[[str | None], str]:
    """The HTTP front door's key -> tenant mapping: a key whose hash a tenant lists -> that
    tenant; no key -> `default_tenant`; any other key -> GatewayError(unauthorized). While no
    tenant has keys configured at all, every request is `default_tenant`'s (the contract's
    "demo when no keys are configured"; SDKs insist on sending some key)."""
    owners = [(tenant_id, config.access.api_key_sha256) for tenant_id, config in tenants.items()]
    any_keys = any(hashes for _, hashes in owners)

    def resolve(api_key: str | None) -> str:
        if api_key is None or not any_keys:
            return default_tenant
        digest = hash_key(api_key)
        matched = [tenant_id for tenant_id, hashes in owners if _matches(digest, hashes)]
        if len(matched) == 1:
            return matched[0]
        from sluice.edge.gateway import GatewayError  # here: the gateway imports this module's users

        reason = "API key is not valid" if not matched else "API key is configured for several tenants"
        raise GatewayError(ErrorCode.UNAUTHORIZED, reason)

    return resolve
