"""Per-tenant policy is compiled once per configuration object, not once per request."""

from __future__ import annotations

from agents.compiled import PerTenantConfig
from agents.sanitize import sanitize_policy
from sluice.tenants import TenantConfig


def test_a_configuration_is_compiled_once_and_a_new_one_again() -> None:
    built: list[TenantConfig] = []

    def build(tenant: TenantConfig) -> object:
        built.append(tenant)
        return object()

    compiled = PerTenantConfig(build)
    first, reloaded = TenantConfig(), TenantConfig()
    assert compiled(first) is compiled(first)
    assert built == [first]
    assert compiled(reloaded) is not compiled(first)  # a changed (reloaded) config compiles anew
    assert len(built) == 2


def test_the_sanitizer_policy_is_shared_by_every_request_of_a_tenant() -> None:
    tenant = TenantConfig()
    assert sanitize_policy(tenant) is sanitize_policy(tenant)
