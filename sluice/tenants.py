"""Per-tenant configuration (`[tenants.<id>]` in sluice.toml, or SLUICE_TENANTS as JSON), its
compiled form (`TenantPolicy`) and the watcher that reloads it when the file changes.

While no tenant has API keys, a tenant without an entry gets the defaults, so the embedded
`demo` tenant works untouched. Once any tenant has keys, only configured tenants are served."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

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
    stream_checks: Literal["windowed", "asynchronous", "buffered"] = Field(
        default="windowed",
        description="Streamed answers: windowed releases text once a window of sentences has "
        "passed the checks; asynchronous releases each piece at once and checks it right after "
        "(fastest, but a leak shows its first part before the stream is cut); buffered holds "
        "the whole answer until every check has passed",
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


log = logging.getLogger("sluice.tenants")

API_KEY_PREFIX = "sk-sluice-"
DEFAULT_TENANT_ID = "demo"
KEY_ID_CHARS = 12  # the public id of a key: the first hex digits of its hash
KAFKA_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")  # what Kafka accepts as a topic name


def own_reply_topic(reply_prefix: str, tenant_id: str) -> str:
    """The reply topic a tenant's Kafka requests may always name: `<reply prefix>.<tenant>`
    (topics under it, `<...>.<tenant>.<anything>`, too). Tenant ids contain no '.', so no
    tenant's topics are another's prefix: a PREFIXED ACL on `sluice.responses.acme.` plus the
    literal `sluice.responses.acme` gives acme exactly its own."""
    return f"{reply_prefix.rstrip('.')}.{tenant_id}"


_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def hash_key(api_key: str) -> str:
    """The hex SHA-256 of an API key: the only form in which keys are ever stored."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()


def new_api_key() -> str:
    """A fresh random API key (shown once to its owner; only its hash is kept)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def key_id(digest: str) -> str:
    """The id under which a key is listed and revoked: never the key, only a prefix of its hash."""
    return digest[:KEY_ID_CHARS]


def _hex_digest(value: str) -> str:
    digest = value.strip().lower()
    if not _SHA256_HEX.match(digest):
        raise ValueError("must be a hex SHA-256 digest (64 hex characters)")
    return digest


class ApiKey(BaseModel):
    """One API key as stored (`[[tenants.<id>.access.keys]]`): its hash, never the key itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(description="Hex SHA-256 of the key")
    label: str = Field(default="", max_length=200, description="What the key is for (shown by list-keys)")
    created_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = Field(default=None, description="Refused from this instant on")

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        return _hex_digest(value)

    @property
    def id(self) -> str:
        return key_id(self.sha256)

    def valid_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


class AccessRules(BaseModel):
    """Who may use this tenant, and for what (checked by the validate stage)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key_sha256: tuple[str, ...] = Field(
        default=(), description="Hex SHA-256 of each accepted API key (no expiry); empty: no key needed"
    )
    keys: tuple[ApiKey, ...] = Field(
        default=(), description="Accepted API keys with label and optional expiry (what add-key writes)"
    )
    disabled: bool = Field(default=False, description="Refuse every request of this tenant (unauthorized)")
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
    reply_topics: tuple[str, ...] = Field(
        default=(),
        description="Topics besides <reply prefix>.<tenant> (and those under it) that this tenant's "
        "Kafka requests may name as reply_to",
    )

    @field_validator("api_key_sha256")
    @classmethod
    def _hex_digests(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return tuple(_hex_digest(item) for item in value)
        except ValueError:
            raise ValueError("each entry must be a hex SHA-256 digest (64 hex characters)") from None

    @field_validator("reply_topics")
    @classmethod
    def _topic_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for topic in value:
            if not KAFKA_TOPIC_NAME.fullmatch(topic):
                raise ValueError(f"{topic!r} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)")
        return value

    @property
    def all_keys(self) -> tuple[ApiKey, ...]:
        """Every accepted key, the plain `api_key_sha256` entries as keys without expiry."""
        return (*(ApiKey(sha256=digest) for digest in self.api_key_sha256), *self.keys)


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
        return self.access.disabled or bool(self.access.api_key_sha256 or self.access.keys)

    def accepts(self, api_key: str | None, now: datetime | None = None) -> bool:
        """Whether a request with this key (None: no key) may use the tenant at `now`. Every
        stored hash is compared (constant time), whichever matched first."""
        if self.access.disabled:
            return False
        if not self.requires_key:
            return True
        if api_key is None:
            return False
        digest, moment = hash_key(api_key), now or datetime.now(UTC)
        found = False
        for key in self.access.all_keys:
            found |= hmac.compare_digest(digest, key.sha256) and key.valid_at(moment)
        return found


DEFAULT_TENANT = TenantConfig()
# What a tenant without an entry gets once any tenant has keys: every request is unauthorized.
UNCONFIGURED_TENANT = TenantConfig(access=AccessRules(disabled=True))


@dataclass(frozen=True)
class TenantPolicy:
    """The tenants compiled once per change of their configuration: lookups by id and by key hash."""

    tenants: Mapping[str, TenantConfig]
    owners: Mapping[str, tuple[tuple[str, ApiKey], ...]] = field(default_factory=dict)
    any_keys: bool = False
    version: int = 0

    @classmethod
    def compile(cls, tenants: Mapping[str, TenantConfig], version: int = 0) -> TenantPolicy:
        owners: dict[str, list[tuple[str, ApiKey]]] = {}
        for tenant_id, config in tenants.items():
            for key in config.access.all_keys:
                owners.setdefault(key.sha256, []).append((tenant_id, key))
        any_keys = any(config.requires_key for config in tenants.values())
        frozen = {digest: tuple(entries) for digest, entries in owners.items()}
        return cls(dict(tenants), frozen, any_keys, version)

    def config(self, tenant_id: str) -> TenantConfig:
        """A configured tenant's rules; an unconfigured tenant gets the defaults while no tenant
        has keys, and is refused (disabled) once any has: the contract's "demo only while no
        keys are configured, or when configured explicitly"."""
        configured = self.tenants.get(tenant_id)
        if configured is not None:
            return configured
        return UNCONFIGURED_TENANT if self.any_keys else DEFAULT_TENANT

    def key_owners(self, api_key: str) -> tuple[tuple[str, ApiKey], ...]:
        """(tenant, stored key) for every tenant that lists this key, expired or not."""
        return self.owners.get(hash_key(api_key), ())


def read_tenants_file(path: Path) -> dict[str, TenantConfig]:
    """The `[tenants]` table of a TOML file, validated; raises OSError or ValueError."""
    document = tomllib.loads(path.read_text("utf-8"))
    raw = document.get("tenants", {})
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: 'tenants' is not a table")
    return {str(name): TenantConfig.model_validate(config) for name, config in raw.items()}


FileStamp = tuple[int, int, int]


class TenantDirectory:
    """The current TenantPolicy of a process. With a tenants file, the file's (mtime, size,
    inode) is checked at most every `poll_s` seconds when the policy is used, and the policy is
    recompiled once per change, never per request: a revoked key stops working within about
    `poll_s` without a restart. A file that does not parse keeps the last good policy (logged)."""

    def __init__(
        self,
        tenants: Mapping[str, TenantConfig],
        file: Path | None = None,
        *,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = TenantPolicy.compile(tenants)
        self.file, self.poll_s, self._clock = file, poll_s, clock
        self._stamp = self._read_stamp()
        self._checked_at = clock()
        self.reloads = 0
        self.failed_reloads = 0

    def policy(self) -> TenantPolicy:
        if self.file is not None and self._clock() - self._checked_at >= self.poll_s:
            self.refresh()
        return self._policy

    def refresh(self) -> bool:
        """Check the file now; True when a changed file was loaded."""
        self._checked_at = self._clock()
        stamp = self._read_stamp()
        if stamp == self._stamp or self.file is None:
            return False
        self._stamp = stamp
        try:
            tenants = read_tenants_file(self.file)
        except (OSError, ValueError) as exc:  # TOMLDecodeError and ValidationError are ValueErrors
            self.failed_reloads += 1
            log.error("tenants file %s not loaded (%s); the earlier tenants stay in force", self.file, exc)
            return False
        self._policy = TenantPolicy.compile(tenants, version=self._policy.version + 1)
        self.reloads += 1
        log.info("tenants file %s reloaded: %d tenant(s)", self.file, len(tenants))
        return True

    def _read_stamp(self) -> FileStamp | None:
        if self.file is None:
            return None
        try:
            stat = self.file.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino
