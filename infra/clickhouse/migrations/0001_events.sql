-- 0001: raw stage events, one row per event on the events topic.
-- `{db}` is replaced by the migration runner with the configured database
-- (settings.clickhouse_database, default `sluice`); never hard-code a database here.
-- Statements are separated by `;` and must be idempotent (IF NOT EXISTS): a file that
-- fails half-way is re-run from its first statement.
--
-- Re-delivered events must not double count: ReplacingMergeTree keeps the newest copy
-- (by inserted_at) of rows with the same ORDER BY key. event_id is deterministic per
-- (request_id, stage) and tenant/stage are fixed per event, while ts can change when a
-- stage re-processes a message, so ts is deliberately NOT part of the key.
-- Counting queries read with FINAL. Raw events expire after 30 days (change the TTL in a
-- later migration with ALTER TABLE ... MODIFY TTL).
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id          String,
    request_id        String,
    correlation_id    String,
    tenant            LowCardinality(String),
    stage             LowCardinality(String),
    status            LowCardinality(String),
    ts                DateTime64(3, 'UTC'),
    duration_ms       Float64,
    model             LowCardinality(String) COMMENT 'empty when no model was involved',
    prompt_tokens     UInt32,
    completion_tokens UInt32,
    cost_usd          Float64,
    cached            Bool,
    error_code        LowCardinality(String) COMMENT 'empty when the stage succeeded',
    flags             Array(LowCardinality(String)),
    attributes        Map(LowCardinality(String), String),
    inserted_at       DateTime64(6, 'UTC') DEFAULT now64(6) COMMENT 'version: the newest copy wins'
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, stage, event_id)
TTL toDateTime(ts) + INTERVAL 30 DAY;
