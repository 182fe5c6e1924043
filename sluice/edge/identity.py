"""Who is asking: the one place that decides a request's tenant, for both ways in.

- HTTP: the API key decides the tenant (`tenant_for_key`).
- Kafka: the request names its `tenant` and carries its `api_key` (`refusal`, called by the
  validate stage).

Both read the same `TenantPolicy`, so a key revoked or expired in the tenants file is refused
on both paths at once. Messages never contain a key or its hash."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from sluice.tenants import DEFAULT_TENANT_ID, UNCONFIGURED_TENANT, TenantConfig, TenantPolicy

PolicySource = Callable[[], TenantPolicy]
TenantResolver = Callable[[str | None], str]


class Unauthorized(Exception):
    """The request may not be served: no key, an unknown, revoked or expired key, or a tenant
    that is not configured (while others have keys)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def tenant_for_key(
    policy: TenantPolicy,
    api_key: str | None,
    *,
    default_tenant: str = DEFAULT_TENANT_ID,
    now: datetime | None = None,
) -> str:
    """The HTTP front door's key -> tenant. While no tenant has keys, everyone is
    `default_tenant` (SDKs insist on sending some key). Once any has: a key must belong to
    exactly one tenant and be unexpired; no key is served only when `default_tenant` is
    configured explicitly and needs no key. Raises Unauthorized otherwise."""
    if not policy.any_keys:
        return default_tenant
    if api_key is None:
        fallback = policy.tenants.get(default_tenant)
        if fallback is not None and not fallback.requires_key:
            return default_tenant
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <api_key>'")
    owners = policy.key_owners(api_key)
    if len(owners) > 1:
        raise Unauthorized("API key is configured for several tenants")
    if not owners:
        raise Unauthorized("API key is not valid")
    tenant, key = owners[0]
    if not key.valid_at(now or datetime.now(UTC)):
        raise Unauthorized("API key has expired")
    if policy.config(tenant).access.disabled:
        raise Unauthorized(f"tenant {tenant!r} is disabled")
    return tenant


def refusal(config: TenantConfig, tenant_id: str, api_key: str | None, now: datetime) -> str | None:
    """The Kafka path's check of (tenant, api_key) against the tenant's configuration (from
    `TenantPolicy.config`): None when allowed, else the `unauthorized` message."""
    if config is UNCONFIGURED_TENANT:
        return f"tenant {tenant_id!r} is not configured (tenants with API keys exist)"
    if config.access.disabled:
        return f"tenant {tenant_id!r} is disabled"
    if not config.requires_key:
        return None
    if api_key is None:
        return f"api_key: tenant {tenant_id!r} requires an API key"
    if not config.accepts(api_key, now):
        return f"api_key: not valid for tenant {tenant_id!r} (unknown, revoked or expired)"
    return None


def tenant_resolver(
    source: PolicySource | Mapping[str, TenantConfig], default_tenant: str = DEFAULT_TENANT_ID
) -> TenantResolver:
    """`tenant_for_key` bound to a policy: a live source (e.g. `Settings.tenant_policy`, which
    follows the tenants file) or a fixed mapping of tenants (tests)."""
    if isinstance(source, Mapping):
        fixed = TenantPolicy.compile(source)

        def current() -> TenantPolicy:
            return fixed

        source = current
    live: PolicySource = source

    def resolve(api_key: str | None) -> str:
        return tenant_for_key(live(), api_key, default_tenant=default_tenant)

    return resolve
