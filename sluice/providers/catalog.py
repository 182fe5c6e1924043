"""The model catalog (`models.toml`): which models exist, where they are served, what they cost,
and the routing rules that pick one of them for `model: auto`.

Without a catalog file Sluice uses three simulated models served by `sluice simulator`, of
different size and price, and the built-in routing rules, so routing works on a fresh machine.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from sluice.settings import Settings

SIMULATOR_BASE_URL = "simulator"  # placeholder resolved to Settings.simulator_url


class CatalogError(ValueError):
    """The catalog file is missing, unreadable or inconsistent; the message says where."""


Tier = Literal["small", "medium", "large"]
TIERS: tuple[Tier, ...] = get_args(Tier)
TIER_RANK: dict[str, int] = {tier: rank for rank, tier in enumerate(TIERS)}
Capability = Literal["json_mode", "tools", "long_context"]


class Deployment(BaseModel):
    """One replica serving a model: its own server, share of traffic and concurrency limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(min_length=1, description="Base URL of this replica, ending in /v1, or 'simulator'")
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:@/-]+$",
        description="Label in events and dashboards; default: the base URL's host:port",
    )
    weight: float = Field(default=1.0, gt=0, description="Relative share of traffic (least busy, weighted)")
    max_concurrency: int | None = Field(
        default=None, ge=1, description="Calls in flight to this replica per worker; default: the model's"
    )
    api_key_env: str | None = Field(default=None, description="Overrides the model's api_key_env")

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        parsed = urlsplit(self.base_url)
        return parsed.netloc or self.base_url


class ModelEntry(BaseModel):
    """One servable model and its prices (USD per 1,000 tokens). It is served either at one
    `base_url` or by several `deployments` (replicas) that infer balances across."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    kind: Literal["openai", "anthropic"] = Field(
        default="openai", description="openai: OpenAI-compatible chat completions; anthropic: messages API"
    )
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL ending in /v1, or 'simulator'"
    )
    deployments: tuple[Deployment, ...] = Field(
        default=(), description="Replicas of this model; instead of base_url"
    )
    upstream_model: str | None = Field(default=None, description="Name the server knows it by")
    api_key_env: str | None = None
    input_price_per_1k: float = Field(ge=0)
    output_price_per_1k: float = Field(ge=0)
    context_window: int = Field(default=8192, ge=1)
    tier: Tier = "medium"
    timeout_s: float | None = Field(default=None, gt=0)
    capabilities: frozenset[Capability] = frozenset({"json_mode"})
    max_concurrency: int = Field(default=256, ge=1, description="Calls in flight to this model per worker")

    @model_validator(mode="after")
    def _served_somewhere(self) -> ModelEntry:
        if (self.base_url is None) == (not self.deployments):
            raise ValueError("give either base_url or deployments (a list of replicas), not both or neither")
        labels = [d.label for d in self.deployments]
        if len(set(labels)) != len(labels):
            raise ValueError(f"deployments: duplicate names {', '.join(labels)}; set a distinct name on each")
        return self

    @property
    def replicated(self) -> bool:
        """Served by a list of deployments (each with its own breaker), not one base_url."""
        return bool(self.deployments)

    @property
    def replicas(self) -> tuple[Deployment, ...]:
        """The deployments, or the one base_url as a single deployment."""
        if self.deployments:
            return self.deployments
        assert self.base_url is not None
        return (Deployment(base_url=self.base_url, max_concurrency=self.max_concurrency),)

    @property
    def total_concurrency(self) -> int:
        """Calls in flight to the whole model per worker: the sum over its replicas."""
        if not self.deployments:
            return self.max_concurrency
        return sum(d.max_concurrency or self.max_concurrency for d in self.deployments)

    def on(self, deployment: Deployment) -> ModelEntry:
        """This model as served by one of its deployments: what a model client calls."""
        if not self.deployments:
            return self
        key_env = deployment.api_key_env or self.api_key_env
        return self.model_copy(
            update={"base_url": deployment.base_url, "deployments": (), "api_key_env": key_env}
        )

    @property
    def served_name(self) -> str:
        return self.upstream_model or self.name

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_price_per_1k + completion_tokens * self.output_price_per_1k) / 1000


class FeatureWeights(BaseModel):
    """Points each request feature adds to the complexity score (negative: makes it simpler)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    length: float = Field(
        default=0.5,
        description="per 100 estimated tokens the client wrote (system + user turns; capped at 1,000)",
    )
    turns: float = Field(default=0.4, description="per earlier user turn (capped at 5)")
    asks: float = Field(
        default=0.75, description="per distinct ask beyond the first in the last turn (capped at 4)"
    )
    context: float = Field(default=0.5, description="retrieved passages (RAG context) are present")
    code: float = Field(default=2.5, description="code, or a request to write or fix code")
    math: float = Field(default=2.5, description="arithmetic word problems, equations, proofs")
    reasoning: float = Field(default=1.5, description="cues such as 'step by step', 'explain why', 'compare'")
    json_output: float = Field(
        default=0.75, description="per level of JSON output asked: 1 JSON object, 2 a JSON schema to follow"
    )
    non_english: float = Field(default=0.5, description="the prompt is mostly not in English")
    constraints: float = Field(
        default=0.5, description="per explicit requirement ('must', 'at least'), capped at 4"
    )
    simple: float = Field(
        default=-1.0, description="cues of a short lookup ('what is', 'define', 'translate')"
    )


FEATURES: tuple[str, ...] = tuple(FeatureWeights.model_fields)


class TierThresholds(BaseModel):
    """Complexity score at which a request needs the medium or the large tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    medium: float = 2.0
    large: float = 6.0

    @model_validator(mode="after")
    def _ordered(self) -> TierThresholds:
        if self.large < self.medium:
            raise ValueError(f"large ({self.large}) must not be below medium ({self.medium})")
        return self


class RouteRule(BaseModel):
    """A named route: requests of its tier go to the cheapest fitting candidate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    tier: Tier
    candidates: tuple[str, ...] = Field(
        default=(), description="Models in order of preference; empty: every model of this tier or above"
    )


class Experiment(BaseModel):
    """Send `fraction` of a route's requests to `challenger`; the rest is the control arm."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    route: str
    challenger: str
    fraction: float = Field(gt=0, le=1)


def _default_routes() -> tuple[RouteRule, ...]:
    return (
        RouteRule(name="simple", tier="small"),
        RouteRule(name="standard", tier="medium"),
        RouteRule(name="complex", tier="large"),
    )


class RoutingConfig(BaseModel):
    """`[routing]` in models.toml: how `model: auto` becomes a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: FeatureWeights = Field(default_factory=FeatureWeights)
    thresholds: TierThresholds = Field(default_factory=TierThresholds)
    floors: dict[str, Tier] = Field(
        default_factory=dict, description="feature -> lowest tier a request with it may get"
    )
    long_context_tokens: int = Field(
        default=16_000, ge=1, description="Prompts this long need a model with the long_context capability"
    )
    routes: tuple[RouteRule, ...] = Field(default_factory=_default_routes, min_length=1)
    experiments: tuple[Experiment, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> RoutingConfig:
        unknown = sorted(set(self.floors) - set(FEATURES))
        if unknown:
            raise ValueError(f"floors: unknown feature(s) {', '.join(unknown)}; known: {', '.join(FEATURES)}")
        names = [rule.name for rule in self.routes]
        tiers = [rule.tier for rule in self.routes]
        if len(set(names)) != len(names):
            raise ValueError(f"routes: duplicate route names in {', '.join(names)}")
        if len(set(tiers)) != len(tiers):
            raise ValueError("routes: at most one route per tier")
        routed = {e.route for e in self.experiments}
        if len(routed) != len(self.experiments):
            raise ValueError("experiments: at most one experiment per route")
        missing = sorted(routed - set(names))
        if missing:
            raise ValueError(
                f"experiments: unknown route(s) {', '.join(missing)}; routes: {', '.join(names)}"
            )
        return self

    def route_for(self, tier: str) -> RouteRule:
        """The route of this tier, else the nearest route above it, else the nearest below."""
        by_rank = sorted(self.routes, key=lambda rule: TIER_RANK[rule.tier])
        above = [rule for rule in by_rank if TIER_RANK[rule.tier] >= TIER_RANK[tier]]
        return above[0] if above else by_rank[-1]

    def experiment_for(self, route: str) -> Experiment | None:
        return next((e for e in self.experiments if e.route == route), None)


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str
    models: tuple[ModelEntry, ...] = Field(min_length=1)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate model names: {', '.join(duplicates)}")
        if self.default not in names:
            raise ValueError(f"default model {self.default!r} is not in the catalog ({', '.join(names)})")
        for rule in self.routing.routes:
            unknown = [c for c in rule.candidates if c not in names]
            if unknown:
                raise ValueError(
                    f"routing.routes[{rule.name}].candidates: unknown model(s) {', '.join(unknown)}; "
                    f"catalog: {', '.join(names)}"
                )
        for experiment in self.routing.experiments:
            if experiment.challenger not in names:
                raise ValueError(
                    f"routing.experiments[{experiment.route}].challenger: unknown model "
                    f"{experiment.challenger!r}; catalog: {', '.join(names)}"
                )
        return self

    def candidates(self, rule: RouteRule) -> tuple[ModelEntry, ...]:
        """The route's models in order of preference: as configured, else every model of the
        route's tier or above, lower tier first and cheaper first within a tier."""
        if rule.candidates:
            return tuple(entry for name in rule.candidates if (entry := self.get(name)) is not None)
        eligible = [entry for entry in self.models if TIER_RANK[entry.tier] >= TIER_RANK[rule.tier]]
        if not eligible:  # nothing that strong: the strongest there is
            top = max(TIER_RANK[entry.tier] for entry in self.models)
            eligible = [entry for entry in self.models if TIER_RANK[entry.tier] == top]
        return tuple(sorted(eligible, key=lambda e: (TIER_RANK[e.tier], e.cost_usd(1000, 1000), e.name)))

    def routing_savings(
        self, baseline: str | None, actual_model: str, prompt_tokens: int, completion_tokens: int
    ) -> float:
        """What the route's baseline (priciest) model would have cost for this usage minus what
        the model that answered cost: infer records it as `Inference.routing_savings_usd`.
        0 when there is no baseline or either model is not in the catalog; negative when a
        pricier model answered (an experiment's challenger, a fallback)."""
        base = self.get(baseline) if baseline else None
        actual = self.get(actual_model)
        if base is None or actual is None:
            return 0.0
        return base.cost_usd(prompt_tokens, completion_tokens) - actual.cost_usd(
            prompt_tokens, completion_tokens
        )

    def get(self, name: str) -> ModelEntry | None:
        for entry in self.models:
            if entry.name == name:
                return entry
        return None

    @property
    def uses_simulator(self) -> bool:
        return any(d.base_url == SIMULATOR_BASE_URL for entry in self.models for d in entry.replicas)


BUILTIN_CATALOG = Catalog(
    default="sim-small",
    models=(
        ModelEntry(
            name="sim-small",
            base_url=SIMULATOR_BASE_URL,
            tier="small",
            input_price_per_1k=0.0002,
            output_price_per_1k=0.0006,
            context_window=8192,
        ),
        ModelEntry(
            name="sim-medium",
            base_url=SIMULATOR_BASE_URL,
            tier="medium",
            input_price_per_1k=0.001,
            output_price_per_1k=0.003,
            context_window=32768,
            capabilities=frozenset({"json_mode", "tools", "long_context"}),
        ),
        ModelEntry(
            name="sim-large",
            base_url=SIMULATOR_BASE_URL,
            tier="large",
            input_price_per_1k=0.005,
            output_price_per_1k=0.015,
            context_window=128000,
            capabilities=frozenset({"json_mode", "tools", "long_context"}),
        ),
    ),
)


def catalog_path(settings: Settings) -> Path | None:
    if settings.models is not None:
        return settings.models
    local = Path("models.toml")
    return local if local.exists() else None


def load_catalog(settings: Settings) -> Catalog:
    """The configured catalog, validated at start-up with errors that name the field."""
    path = catalog_path(settings)
    if path is None:
        return BUILTIN_CATALOG
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"cannot read model catalog {path}: {exc}") from exc
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CatalogError(f"invalid model catalog {path}: {details}") from exc


def base_url(entry: ModelEntry, settings: Settings) -> str:
    """Where to call this entry; for a replicated model pass `entry.on(deployment)`."""
    url = entry.replicas[0].base_url
    return settings.simulator_url if url == SIMULATOR_BASE_URL else url.rstrip("/")


def api_key(entry: ModelEntry) -> SecretStr | None:
    """The provider key, read from the environment variable the catalog names (never stored)."""
    if entry.api_key_env is None:
        return None
    value = os.environ.get(entry.api_key_env)
    return SecretStr(value) if value else None
