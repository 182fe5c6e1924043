-- 0004: mirror of the deadletter topic, for operators.
-- `{db}` is replaced by the migration runner with the configured database
-- (settings.clickhouse_database, default `sluice`); never hard-code a database here.
-- Statements are separated by `;` and must be idempotent (IF NOT EXISTS).
--
-- One row per dead message, keyed by where the message came from (source topic,
-- partition, offset) plus a hash of its bytes: the sink re-reading the deadletter topic,
-- or a stage dead-lettering the same source message twice, replaces the row; the same
-- offset holding different bytes after an in-memory broker restart adds a row.
-- Records of the deadletter topic that are not even a DeadLetter are stored with
-- source_topic/partition/offset of the deadletter record itself and stage 'sink'.
CREATE TABLE IF NOT EXISTS {db}.deadletters
(
    reason       String,
    source_topic LowCardinality(String),
    `partition`  Int32,
    `offset`     Int64,
    stage        LowCardinality(String),
    ts           DateTime64(3, 'UTC'),
    raw_base64   String,
    raw_hash     UInt64 MATERIALIZED cityHash64(raw_base64),
    inserted_at  DateTime64(6, 'UTC') DEFAULT now64(6) COMMENT 'version: the newest copy wins'
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (source_topic, `partition`, `offset`, raw_hash)
TTL toDateTime(ts) + INTERVAL 90 DAY;
