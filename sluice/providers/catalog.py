"""The model catalog (`models.toml`): which models exist, where they are served, what they cost.

Without a catalog file Sluice uses three simulated models served by `sluice simulator`, of
different size and price, so routing has something to choose from on a fresh machine.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from sluice.settings import Settings

SIMULATOR_BASE_URL = "simulator"  # placeholder resolved to Settings.simulator_url


class CatalogError(ValueError):
    """The catalog file is missing, unreadable or inconsistent; the message says where."""


class ModelEntry(BaseModel):
    """One servable model and its prices (USD per 1,000 tokens)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    kind: Literal["openai", "anthropic"] = Field(
        default="openai", description="openai: OpenAI-compatible chat completions; anthropic: messages API"
    )
    base_url: str = Field(description="OpenAI-compatible base URL ending in /v1, or 'simulator'")
    upstream_model: str | None = Field(default=None, description="Name the server knows it by")
    api_key_env: str | None = None
    input_price_per_1k: float = Field(ge=0)
    output_price_per_1k: float = Field(ge=0)
    context_window: int = Field(default=8192, ge=1)
    tier: Literal["small", "medium", "large"] = "medium"
    timeout_s: float | None = Field(default=None, gt=0)
    capabilities: frozenset[Literal["json_mode", "tools", "long_context"]] = frozenset({"json_mode"})
    max_concurrency: int = Field(default=256, ge=1, description="Calls in flight to this model per worker")

    @property
    def served_name(self) -> str:
        return self.upstream_model or self.name

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_price_per_1k + completion_tokens * self.output_price_per_1k) / 1000


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str
    models: tuple[ModelEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate model names: {', '.join(duplicates)}")
        if self.default not in names:
            raise ValueError(f"default model {self.default!r} is not in the catalog ({', '.join(names)})")
        return self

    def get(self, name: str) -> ModelEntry | None:
        for entry in self.models:
            if entry.name == name:
                return entry
        return None

    @property
    def uses_simulator(self) -> bool:
        return any(entry.base_url == SIMULATOR_BASE_URL for entry in self.models)


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
        ),
        ModelEntry(
            name="sim-large",
            base_url=SIMULATOR_BASE_URL,
            tier="large",
            input_price_per_1k=0.005,
            output_price_per_1k=0.015,
            context_window=128000,
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
    return settings.simulator_url if entry.base_url == SIMULATOR_BASE_URL else entry.base_url.rstrip("/")


def api_key(entry: ModelEntry) -> SecretStr | None:
    """The provider key, read from the environment variable the catalog names (never stored)."""
    if entry.api_key_env is None:
        return None
    value = os.environ.get(entry.api_key_env)
    return SecretStr(value) if value else None
