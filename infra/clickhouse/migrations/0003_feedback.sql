-- 0003: one row per message on the feedback topic.
-- `{db}` is replaced by the migration runner with the configured database
-- (settings.clickhouse_database, default `sluice`); never hard-code a database here.
-- Statements are separated by `;` and must be idempotent (IF NOT EXISTS).
--
-- feedback_id is "<partition>:<offset>" of the Kafka record, so a redelivered record
-- replaces its row. ts is the record's Kafka timestamp, identical on redelivery; it is
-- part of the key because the embedded broker keeps topics in memory: after a broker
-- restart offsets start again at 0, and new feedback must not replace old rows.
CREATE TABLE IF NOT EXISTS {db}.feedback
(
    feedback_id String,
    request_id  String,
    tenant      LowCardinality(String),
    rating      Int8,
    label       LowCardinality(String),
    comment     String,
    ts          DateTime64(3, 'UTC'),
    inserted_at DateTime64(6, 'UTC') DEFAULT now64(6) COMMENT 'version: the newest copy wins'
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, feedback_id, ts);
