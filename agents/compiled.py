"""Per-tenant policy compiled once per tenant configuration, not once per request.

A tenant's configuration object lives as long as the settings that hold it: from start-up until
the configuration changes. So the compiled policy is cached by the object's identity, which costs
one dict lookup per request (hashing the configuration, as before, cost a JSON dump of it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from sluice.tenants import TenantConfig

Compiled = TypeVar("Compiled")

# More distinct configurations than this means configurations keep being replaced (reloads):
# start again rather than keep every old one alive.
MAX_CONFIGURATIONS = 4096


class PerTenantConfig(Generic[Compiled]):
    """`build(tenant)` once per configuration object; the object is held, so its id stays its own."""

    def __init__(self, build: Callable[[TenantConfig], Compiled]) -> None:
        self._build = build
        self._compiled: dict[int, tuple[TenantConfig, Compiled]] = {}

    def __call__(self, tenant: TenantConfig) -> Compiled:
        cached = self._compiled.get(id(tenant))
        if cached is None or cached[0] is not tenant:
            if len(self._compiled) >= MAX_CONFIGURATIONS:
                self._compiled.clear()
            cached = self._compiled[id(tenant)] = (tenant, self._build(tenant))
        return cached[1]
