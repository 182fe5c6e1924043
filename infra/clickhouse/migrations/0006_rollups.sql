-- 0006: per-minute rollups maintained by materialized views, and retention.
-- `{db}` is replaced by the migration runner; every statement is idempotent.
--
-- Dashboards, alerts and the feedback loop read these rollups, not the raw tables: a minute
-- holds one row per (tenant, stage|route, model, status, error_code) however many events
-- arrived. Counts are SimpleAggregateFunction(sum) columns, latency is a t-digest quantile
-- state (merge with quantilesTDigestMerge(0.5, 0.95, 0.99)).
--
-- Caveat: a materialized view sees every insert, so an event the sink re-delivers after a
-- crash (at-least-once) is counted twice in the rollups although the raw ReplacingMergeTree
-- tables keep one copy. Redelivery is rare (offsets commit after each insert) and only
-- affects the batch in flight at a crash; exact per-request figures come from the raw
-- tables with FINAL.
--
-- Retention: raw events/requests/feedback 30 days, rollups 400 days. The sink re-applies
-- settings.raw_ttl_days / rollup_ttl_days at start-up (ALTER ... MODIFY TTL) when they differ.

-- Figures the final event carries for token utilisation and content consistency.
ALTER TABLE {db}.requests ADD COLUMN IF NOT EXISTS max_tokens UInt32 DEFAULT 0 AFTER completion_tokens;
ALTER TABLE {db}.requests ADD COLUMN IF NOT EXISTS question_hash String DEFAULT '' COMMENT 'hash of the normalised question';
ALTER TABLE {db}.requests ADD COLUMN IF NOT EXISTS answer_hash String DEFAULT '' COMMENT 'hash of the normalised answer';
ALTER TABLE {db}.requests MODIFY TTL toDateTime(received_at) + INTERVAL 30 DAY;
ALTER TABLE {db}.feedback MODIFY TTL toDateTime(ts) + INTERVAL 30 DAY;

-- One row per minute, tenant, stage, model, status and error code, from the events table.
CREATE TABLE IF NOT EXISTS {db}.stage_minute
(
    minute              DateTime('UTC'),
    tenant              LowCardinality(String),
    stage               LowCardinality(String),
    model               LowCardinality(String),
    status              LowCardinality(String),
    error_code          LowCardinality(String),
    events              SimpleAggregateFunction(sum, UInt64),
    cached              SimpleAggregateFunction(sum, UInt64),
    prompt_tokens       SimpleAggregateFunction(sum, UInt64),
    completion_tokens   SimpleAggregateFunction(sum, UInt64),
    cost_usd            SimpleAggregateFunction(sum, Float64),
    cache_savings_usd   SimpleAggregateFunction(sum, Float64),
    routing_savings_usd SimpleAggregateFunction(sum, Float64),
    duration_ms         AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, tenant, stage, model, status, error_code)
TTL minute + INTERVAL 400 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.stage_minute_mv TO {db}.stage_minute AS
SELECT
    toStartOfMinute(e.ts) AS minute,
    e.tenant AS tenant,
    e.stage AS stage,
    e.model AS model,
    e.status AS status,
    e.error_code AS error_code,
    count() AS events,
    countIf(e.cached) AS cached,
    sum(toUInt64(e.prompt_tokens)) AS prompt_tokens,
    sum(toUInt64(e.completion_tokens)) AS completion_tokens,
    sum(e.cost_usd) AS cost_usd,
    sum(e.cache_savings_usd) AS cache_savings_usd,
    sum(e.routing_savings_usd) AS routing_savings_usd,
    quantilesTDigestState(0.5, 0.95, 0.99)(e.duration_ms) AS duration_ms
FROM {db}.events AS e
GROUP BY minute, tenant, stage, model, status, error_code;

-- One row per minute, tenant, model, route, status and error code, from finished requests.
CREATE TABLE IF NOT EXISTS {db}.request_minute
(
    minute                DateTime('UTC'),
    tenant                LowCardinality(String),
    model                 LowCardinality(String),
    route                 LowCardinality(String),
    status                LowCardinality(String),
    error_code            LowCardinality(String),
    requests              SimpleAggregateFunction(sum, UInt64),
    cached                SimpleAggregateFunction(sum, UInt64),
    prompt_tokens         SimpleAggregateFunction(sum, UInt64),
    completion_tokens     SimpleAggregateFunction(sum, UInt64),
    capped_requests       SimpleAggregateFunction(sum, UInt64) COMMENT 'requests that stated max_tokens',
    capped_completion     SimpleAggregateFunction(sum, UInt64) COMMENT 'their completion tokens',
    capped_max_tokens     SimpleAggregateFunction(sum, UInt64) COMMENT 'their max_tokens',
    cost_usd              SimpleAggregateFunction(sum, Float64),
    cache_savings_usd     SimpleAggregateFunction(sum, Float64),
    routing_savings_usd   SimpleAggregateFunction(sum, Float64),
    grounded_checked      SimpleAggregateFunction(sum, UInt64),
    groundedness_sum      SimpleAggregateFunction(sum, Float64),
    hallucination_checked SimpleAggregateFunction(sum, UInt64),
    hallucinations        SimpleAggregateFunction(sum, UInt64),
    schema_checked        SimpleAggregateFunction(sum, UInt64),
    schema_valid          SimpleAggregateFunction(sum, UInt64),
    latency_ms            AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, tenant, model, route, status, error_code)
TTL minute + INTERVAL 400 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.request_minute_mv TO {db}.request_minute AS
SELECT
    toStartOfMinute(r.finished_at) AS minute,
    r.tenant AS tenant,
    r.model AS model,
    r.route AS route,
    r.status AS status,
    r.error_code AS error_code,
    count() AS requests,
    countIf(r.cached) AS cached,
    sum(toUInt64(r.prompt_tokens)) AS prompt_tokens,
    sum(toUInt64(r.completion_tokens)) AS completion_tokens,
    countIf(r.max_tokens > 0) AS capped_requests,
    sumIf(toUInt64(r.completion_tokens), r.max_tokens > 0) AS capped_completion,
    sumIf(toUInt64(r.max_tokens), r.max_tokens > 0) AS capped_max_tokens,
    sum(r.cost_usd) AS cost_usd,
    sum(r.cache_savings_usd) AS cache_savings_usd,
    sum(r.routing_savings_usd) AS routing_savings_usd,
    countIf(r.groundedness IS NOT NULL) AS grounded_checked,
    sum(ifNull(r.groundedness, 0)) AS groundedness_sum,
    countIf(r.hallucination IS NOT NULL) AS hallucination_checked,
    countIf(ifNull(r.hallucination, false)) AS hallucinations,
    countIf(r.schema_valid IS NOT NULL) AS schema_checked,
    countIf(ifNull(r.schema_valid, false)) AS schema_valid,
    quantilesTDigestState(0.5, 0.95, 0.99)(r.latency_ms) AS latency_ms
FROM {db}.requests AS r
GROUP BY minute, tenant, model, route, status, error_code;

-- One row per minute, tenant and label, from the feedback table.
CREATE TABLE IF NOT EXISTS {db}.feedback_minute
(
    minute     DateTime('UTC'),
    tenant     LowCardinality(String),
    label      LowCardinality(String),
    messages   SimpleAggregateFunction(sum, UInt64),
    rating_sum SimpleAggregateFunction(sum, Int64),
    negative   SimpleAggregateFunction(sum, UInt64),
    positive   SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, tenant, label)
TTL minute + INTERVAL 400 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_minute_mv TO {db}.feedback_minute AS
SELECT
    toStartOfMinute(f.ts) AS minute,
    f.tenant AS tenant,
    f.label AS label,
    count() AS messages,
    sum(toInt64(f.rating)) AS rating_sum,
    countIf(f.rating < 0) AS negative,
    countIf(f.rating > 0) AS positive
FROM {db}.feedback AS f
GROUP BY minute, tenant, label
