"""Per-tenant configuration (`[tenants.<id>]` in sluice.toml, or SLUICE_TENANTS as JSON).

A tenant without an entry gets the defaults, so the embedded `demo` tenant works untouched."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: InputRules = Field(default_factory=InputRules)
    output: OutputRules = Field(default_factory=OutputRules)


DEFAULT_TENANT = TenantConfig()
