"""All configuration, from one place: environment (SLUICE_*) over `sluice.toml` over defaults."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sluice.observability.rules import AlertRule, default_alert_rules
from sluice.tenants import TenantConfig, TenantDirectory, TenantPolicy
from topics import TopicLayout

EMBEDDED_BROKER_PORT = 9092
TOML_FILE = "sluice.toml"


class _TomlSource(TomlConfigSettingsSource):
    """sluice.toml; when it configures tenants, it also becomes the watched tenants file, so
    running processes follow `sluice tenant add-key/revoke-key` without a restart."""

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        if "tenants" in data and "tenants_file" not in data:
            data["tenants_file"] = str(Path(TOML_FILE).resolve())
        return data


class Settings(BaseSettings):
    """One class for every process (worker, sink, simulator, CLI), so they always agree."""

    model_config = SettingsConfigDict(
        env_prefix="SLUICE_",
        toml_file=TOML_FILE,
        extra="ignore",
        frozen=True,
    )

    # --- where things are --------------------------------------------------------------
    home: Path = Field(default=Path(".sluice"), description="Data dir for the embedded defaults.")
    kafka_bootstrap: str | None = Field(default=None, description="Unset: the embedded broker.")
    embedded_broker_port: int = EMBEDDED_BROKER_PORT
    topic_prefix: str = "sluice."
    clickhouse_dsn: SecretStr | None = Field(default=None, description="chdb://path or http(s)://...")
    clickhouse_database: str = "sluice"
    http_host: str = Field(default="127.0.0.1", description="Gateway bind address (0.0.0.0 in a container)")
    http_port: int = Field(default=8080, description="Gateway: /v1, /dashboard, /healthz, /readyz, /metrics")
    models: Path | None = Field(default=None, description="Model catalog; else ./models.toml or built-in.")
    migrations_dir: Path | None = None

    # --- validate ------------------------------------------------------------------------
    max_request_bytes: int = 64 * 1024
    reply_prefix: str | None = Field(
        default=None, description="Allowed reply_to prefix; default <prefix>responses"
    )
    min_deadline_ms: int = 100
    max_deadline_ms: int = 600_000
    max_messages: int = 256
    max_tokens_limit: int = Field(default=32_768, description="Upper bound of a request's max_tokens")
    max_context_passages: int = 32
    max_context_bytes: int = 48 * 1024
    max_metadata_keys: int = 32
    max_metadata_key_chars: int = 64
    max_metadata_value_chars: int = 512
    dedupe_window_s: float = 24 * 3600.0
    dedupe_sweep_interval_s: float = 60.0

    # --- worker --------------------------------------------------------------------------
    app_id: str = "sluice"
    infer_max_in_flight: int = 1000
    infer_connect_timeout_s: float = 2.0
    infer_read_timeout_s: float = 120.0
    broker_session_timeout_s: float = 6.0
    broker_heartbeat_interval_s: float = 1.0
    broker_rebalance_timeout_s: float = 6.0
    broker_commit_interval_s: float = Field(
        default=0.25, description="Frequent commits: fewer redeliveries after a crash"
    )
    consumer_fetch_wait_ms: int = Field(
        default=10, description="Fetch long-poll; Tansu needs it short (bench/broker_fetch.py)"
    )
    consumer_in_loop: bool = Field(
        default=True,
        description="Run the worker's Kafka consumer on its event loop, not in a thread of its own",
    )
    producer_linger_ms: float = Field(
        default=1.0, description="Batch window per hop: 5 ms cost 20-30 ms end to end (bench/faust_chain.py)"
    )
    processing_guarantee: str = Field(default="at_least_once", description="exactly_once: real Kafka only")
    chain_breaks: str = Field(
        default="",
        description="Stages that start a new chain, comma-separated: '' runs validate..validate_response "
        "in one agent; 'infer' lets infer scale on workers of its own; 'all' is one hop per stage",
    )
    worker_chains: str = Field(
        default="",
        description="Chains this worker runs, by first stage (e.g. 'infer'), plus 'admit'; '' runs all",
    )
    publish_retry_s: float = Field(
        default=30.0, gt=0, description="How long a refused publish is retried before the worker stops"
    )
    crash_stop_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="After a publish the broker kept refusing: longest clean stop before the worker "
        "exits anyway (its unpublished records stay unacked, so they are delivered again)",
    )
    worker_datadir: Path | None = None
    worker_host: str = Field(default="127.0.0.1", description="Worker /healthz, /readyz, /metrics address")
    worker_port: int = Field(default=0, ge=0, description="Worker health and metrics port; 0: any free port")
    gateway_drain_delay_s: float = Field(
        default=0.0, ge=0, description="SIGTERM: serve on this long, /readyz 503, so balancers move away"
    )
    drain_timeout_s: float = Field(
        default=30.0, gt=0, description="SIGTERM: longest wait for in-flight work before stopping anyway"
    )

    # --- infer resilience (retries, circuit breakers) and the response cache ---------------
    infer_deadline_reserve_ms: float = Field(
        default=50.0, ge=0, description="Deadline time kept for validate-response and the reply"
    )
    infer_retry_attempts: int = Field(default=3, ge=1, description="Calls per model for retryable failures")
    infer_retry_base_s: float = Field(default=0.1, gt=0, description="First backoff; doubles per retry")
    infer_retry_max_backoff_s: float = Field(default=2.0, gt=0, description="Backoff cap (full jitter)")
    infer_retry_after_max_s: float = Field(default=10.0, ge=0, description="Longest Retry-After honoured")
    breaker_window_s: float = Field(default=5.0, gt=0, description="Sliding window of calls per model")
    breaker_min_calls: int = Field(default=5, ge=1, description="Calls in the window before it can open")
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1, description="Bad-call share that opens")
    breaker_slow_call_s: float = Field(default=30.0, gt=0, description="A call slower than this is bad")
    breaker_open_s: float = Field(default=5.0, gt=0, description="Open time before half-open probes")
    breaker_half_open_probes: int = Field(default=2, ge=1, description="Successes that close it again")
    cache_enabled: bool = True
    cache_ttl_s: float = Field(default=3600.0, gt=0)
    cache_max_entries: int = Field(default=50_000, ge=1, description="Per worker; oldest evicted first")

    # --- sink ----------------------------------------------------------------------------
    sink_batch_size: int = Field(
        default=200_000,
        ge=1,
        description="Records per insert at most (a batch also ends after sink_batch_seconds, so only a "
        "sink catching up fills it). Each insert has a fixed engine cost with every view on "
        "(duplicate lookups, one part per table and the merges of those parts), so large batches "
        "make the rows cheap: 200k instead of 100k gave 8% more rows/s and 12% more rows per "
        "CPU-second in bench/analytics.py (100k instead of 50k had given about 25% more rows per "
        "CPU-second); memory grows with it (about 250 MB more per 50k records)",
    )
    sink_batch_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Longest wait before an insert. Each insert costs the engine a fixed amount of CPU "
        "(see sink_batch_size), so at 0.5 s the sink took a sixth of a core even at 20 req/s; "
        "at 2 s it takes half of that, and dashboards read minute and hour windows",
    )
    sink_fetch_wait_ms: int = Field(
        default=1000,
        ge=1,
        le=30000,
        description="How long the sink's fetch waits for events. The embedded broker holds a fetch for "
        "up to this wait and reads through every stored batch of a partition to serve it, so each fetch "
        "costs it more as the topic grows; the sink inserts every sink_batch_seconds anyway, so a long "
        "wait saves the broker that work without delaying any answer",
    )
    sink_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU priority the sink gives up (Unix niceness added at start): when it shares a "
        "machine with the broker, workers and gateway, analytics waits and answers do not",
    )
    sink_group: str = "sluice-sink"
    sink_query_port: int = 0
    sink_host: str = Field(default="127.0.0.1", description="Sink /healthz, /readyz, /metrics bind address")
    sink_port: int = Field(default=0, ge=0, description="Sink health and metrics port; 0: any free port")

    # --- topic layout (topics/ declares the topics; these override counts and replication) -----
    stage_partitions: int | None = Field(
        default=None, ge=1, description="Partitions of the stage topics and sluice.responses; unset: topics/"
    )
    topic_partitions: dict[str, int] = Field(
        default_factory=dict, description='Partitions per other topic by suffix, e.g. {"events": 12}'
    )
    topic_replication_factor: int = Field(default=1, ge=1, description="Sluice topics and Faust changelogs")
    topic_min_insync_replicas: int = Field(default=1, ge=1, description="min.insync.replicas of every topic")
    table_standby_replicas: int = Field(
        default=0, ge=0, description="Faust table standbys: a restarted worker's tables are warm elsewhere"
    )

    # --- simulator -----------------------------------------------------------------------
    simulator_host: str = "127.0.0.1"
    simulator_port: int = 8099
    simulator_latency_ms: float = 200.0
    simulator_latency_jitter_ms: float = 100.0
    simulator_error_rate: float = 0.0
    simulator_timeout_rate: float = 0.0
    simulator_malformed_rate: float = 0.0
    simulator_token_ms: float = Field(default=0.0, ge=0, description="Simulator: delay between two tokens")
    simulator_seed: int | None = None

    # --- quotas (rate limits and budgets; see agents/admission.py) -------------------------
    quota_window_s: float = Field(
        default=60.0, gt=0, description="Length of the rate-limit window; tenants' *_per_minute apply to it"
    )
    quota_window_buckets: int = Field(
        default=60, ge=1, le=600, description="Sub-buckets of the sliding window (its resolution)"
    )
    quota_hold_grace_s: float = Field(
        default=120.0, ge=0, description="An unsettled reservation expires this long after its deadline"
    )
    quota_sweep_interval_s: float = Field(default=30.0, gt=0)

    # --- tenants -------------------------------------------------------------------------
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    tenants_file: Path | None = Field(
        default=None,
        description="TOML file whose [tenants] table running processes reload when it changes "
        "(default: sluice.toml when it configures tenants); unset: tenants are fixed at start",
    )
    tenants_poll_s: float = Field(default=1.0, gt=0, description="How often the tenants file is checked")

    # --- Kafka security (every Kafka client Sluice makes: see sluice/kafka_clients.py) ---------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle; unset: the system's")
    kafka_ssl_certfile: Path | None = Field(default=None, description="Client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True

    # --- client --------------------------------------------------------------------------
    client_timeout_s: float = 60.0
    client_fetch_wait_ms: int = Field(
        default=10,
        ge=1,
        description="Reply consumer's fetch long-poll: each answer waits up to this for its poll on "
        "brokers that poll (the embedded one); on Apache Kafka a fetch returns when data arrives",
    )

    # --- monitoring: retention, /metrics, alerts, feedback loop (issue #7) ----------------
    raw_ttl_days: int = Field(default=30, ge=1, description="Raw events/requests/feedback retention")
    rollup_ttl_days: int = Field(default=400, ge=1, description="Per-minute rollup retention")
    alert_interval_s: float = Field(default=15.0, gt=0, description="Alert evaluation period")
    alert_rules: list[AlertRule] = Field(default_factory=default_alert_rules)
    request_id_key: SecretStr | None = Field(
        default=None,
        description="Keys the tenant tag in every request_id (HMAC); the same on every worker and "
        "gateway. Unset: an unkeyed tag (foreign ids still refused). Changing it orphans older ids",
    )
    alert_webhook_url: SecretStr | None = Field(default=None, description="POST each alert transition here")
    alert_webhook_timeout_s: float = 5.0
    lag_interval_s: float = Field(default=10.0, gt=0, description="Lag measurement period")
    feedback_interval_s: float = Field(default=30.0, gt=0, description="Route advice period")
    feedback_window_minutes: int = Field(default=60, ge=1)
    feedback_min_samples: int = Field(default=5, ge=1, description="Ratings needed before advice changes")
    feedback_demote_at: float = Field(default=-0.2, ge=-1, le=1, description="Demote at mean rating <= this")
    feedback_recover_at: float = Field(default=0.2, ge=-1, le=1, description="Un-demote at mean >= this")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Order is precedence: explicit arguments, then env, then sluice.toml.
        return (init_settings, env_settings, _TomlSource(settings_cls))

    @model_validator(mode="after")
    def _layout_is_consistent(self) -> Settings:
        self.topic_layout  # noqa: B018 - raises ValueError naming the setting that is wrong
        return self

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @cached_property
    def bootstrap(self) -> str:
        """The Kafka bootstrap servers actually used (embedded broker when unset)."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.embedded_broker_port}"

    @cached_property
    def topic_layout(self) -> TopicLayout:
        """Partitions and replication of every topic: topics/ declares, these settings override."""
        return TopicLayout(
            stage_partitions=self.stage_partitions,
            partitions=dict(self.topic_partitions),
            replication_factor=self.topic_replication_factor,
            min_insync_replicas=self.topic_min_insync_replicas,
        )

    @property
    def uses_embedded_broker(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def warehouse_dsn(self) -> str:
        if self.clickhouse_dsn is not None:
            return self.clickhouse_dsn.get_secret_value()
        return f"chdb://{self.home / 'clickhouse'}"

    @property
    def allowed_reply_prefix(self) -> str:
        return self.reply_prefix or f"{self.topic_prefix}responses"

    @property
    def request_id_tag_key(self) -> bytes:
        """The key of request_ids' tenant tags (sluice/request_ids.py); empty: unkeyed."""
        return self.request_id_key.get_secret_value().encode() if self.request_id_key else b""

    @property
    def run_dir(self) -> Path:
        """Pid and port files of the processes `sluice up` started."""
        return self.home / "run"

    @property
    def simulator_url(self) -> str:
        return f"http://{self.simulator_host}:{self.simulator_port}/v1"

    def child_env(self, base: Mapping[str, str], **extra: str) -> dict[str, str]:
        """The environment that makes a child process load exactly these settings (secrets
        included, which is why it is only ever handed to our own child processes)."""
        env = {k: v for k, v in base.items() if not k.startswith("SLUICE_")}
        for name, value in self.model_dump(mode="json").items():
            if value is not None:
                env[f"SLUICE_{name.upper()}"] = (
                    json.dumps(value) if isinstance(value, dict | list) else str(value)
                )
        env["SLUICE_CLICKHOUSE_DSN"] = self.warehouse_dsn
        secrets = {
            "SLUICE_ALERT_WEBHOOK_URL": self.alert_webhook_url,
            "SLUICE_KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
            "SLUICE_KAFKA_SSL_KEY_PASSWORD": self.kafka_ssl_key_password,
            "SLUICE_REQUEST_ID_KEY": self.request_id_key,
        }
        env.update({name: value.get_secret_value() for name, value in secrets.items() if value is not None})
        env.update(extra)
        return env

    @cached_property
    def tenant_directory(self) -> TenantDirectory:
        """This process's tenants, following `tenants_file` when one is set."""
        return TenantDirectory(self.tenants, self.tenants_file, poll_s=self.tenants_poll_s)

    def tenant_policy(self) -> TenantPolicy:
        return self.tenant_directory.policy()

    def tenant(self, tenant_id: str) -> TenantConfig:
        """A tenant's rules, as of the tenants file's last change (see TenantPolicy.config)."""
        return self.tenant_directory.policy().config(tenant_id)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and the CLI's flags use it)."""
        return type(self).model_validate({**self.model_dump(), **changes})
