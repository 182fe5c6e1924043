-- 0002: one row per finished request, built by the sink from the event that carries a
-- `summary` (the event that ends the request).
-- `{db}` is replaced by the migration runner with the configured database
-- (settings.clickhouse_database, default `sluice`); never hard-code a database here.
-- Statements are separated by `;` and must be idempotent (IF NOT EXISTS).
--
-- Keyed by (tenant, request_id): a redelivered or re-processed final event replaces the
-- row instead of adding one. received_at is set once at validate, so the partition of a
-- request never changes. Counting queries read with FINAL.
CREATE TABLE IF NOT EXISTS {db}.requests
(
    request_id        String,
    correlation_id    String,
    tenant            LowCardinality(String),
    received_at       DateTime64(3, 'UTC'),
    finished_at       DateTime64(3, 'UTC'),
    status            LowCardinality(String),
    model             LowCardinality(String) COMMENT 'empty when the request never reached a model',
    prompt_tokens     UInt32,
    completion_tokens UInt32,
    cost_usd          Float64,
    cached            Bool,
    latency_ms        Float64,
    groundedness      Nullable(Float64),
    hallucination     Nullable(Bool),
    schema_valid      Nullable(Bool),
    error_code        LowCardinality(String) COMMENT 'empty when status is ok',
    flags             Array(LowCardinality(String)),
    stage             LowCardinality(String) COMMENT 'the stage that ended the request',
    event_id          String COMMENT 'the final event this row was built from',
    inserted_at       DateTime64(6, 'UTC') DEFAULT now64(6) COMMENT 'version: the newest copy wins'
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(received_at)
ORDER BY (tenant, request_id);
