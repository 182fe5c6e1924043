-- 0009: per-replica (deployment) rollups, so the `deployments` metric stops reading raw events.
-- `{db}` is replaced by the migration runner. The runner records every statement it completes,
-- so a file that fails half-way resumes at the failed statement.
--
-- Why: `deployments` read every infer event of its window from `events` (76M rows read, 1.3 s
-- at 7 days and 10M requests). A minute holds one row per (model, deployment) here however many
-- calls came in, and an hour one row per (model, deployment).
--
-- What a row counts, as the raw query did: an infer event (not a breaker transition) naming a
-- `deployment` is one call to it, answered when the event's status is ok (its
-- `model_latency_ms` then goes into the latency quantiles); each entry of `deployment_errors`
-- (comma-separated, breaker events included) is one failed call to that deployment. Counts are
-- exact sums; latency is a t-digest state like the other rollups. The view reads the
-- deduplicated `events` inserts (migration 0007), so a redelivered event counts once.
--
-- Existing data: both tables are filled once from the raw events still kept (30 days by
-- default), then the views keep them current. Nothing else is needed to backfill.

CREATE TABLE IF NOT EXISTS {db}.deployment_minute
(
    minute       DateTime('UTC'),
    model        LowCardinality(String),
    deployment   LowCardinality(String),
    answered     SimpleAggregateFunction(sum, UInt64),
    failed_calls SimpleAggregateFunction(sum, UInt64),
    latency_ms   AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64) COMMENT 'answered calls only'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, model, deployment)
TTL minute + INTERVAL 400 DAY
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.deployment_hour
(
    hour         DateTime('UTC'),
    model        LowCardinality(String),
    deployment   LowCardinality(String),
    answered     SimpleAggregateFunction(sum, UInt64),
    failed_calls SimpleAggregateFunction(sum, UInt64),
    latency_ms   AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64) COMMENT 'answered calls only'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, model, deployment)
TTL hour + INTERVAL 400 DAY;

-- Backfill: the view's SELECT over the stored events (ARRAY JOIN turns an event into its calls:
-- (deployment, answered, failed, latency)); the hourly table from the minute one.
INSERT INTO {db}.deployment_minute
SELECT
    toStartOfMinute(e.ts) AS minute,
    e.model AS model,
    call.1 AS deployment,
    sum(toUInt64(call.2)) AS answered,
    sum(toUInt64(call.3)) AS failed_calls,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(call.4, call.2 = 1) AS latency_ms
FROM {db}.events AS e
ARRAY JOIN arrayConcat(
    if(e.attributes['deployment'] != '' AND e.status NOT LIKE 'breaker_%',
        [(e.attributes['deployment'], toUInt8(e.status = 'ok'), toUInt8(0),
          toFloat64OrZero(e.attributes['model_latency_ms']))],
        []),
    arrayMap(d -> (d, toUInt8(0), toUInt8(1), toFloat64(0)),
        if(e.attributes['deployment_errors'] != '', splitByChar(',', e.attributes['deployment_errors']), []))
) AS call
WHERE e.stage = 'infer' AND (e.attributes['deployment'] != '' OR e.attributes['deployment_errors'] != '')
GROUP BY minute, model, deployment;

INSERT INTO {db}.deployment_hour
SELECT toStartOfHour(minute) AS hour, model, deployment, sum(answered), sum(failed_calls),
    quantilesTDigestMergeState(0.5, 0.95, 0.99)(latency_ms)
FROM {db}.deployment_minute
GROUP BY hour, model, deployment;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.deployment_minute_mv TO {db}.deployment_minute AS
SELECT
    toStartOfMinute(e.ts) AS minute,
    e.model AS model,
    call.1 AS deployment,
    sum(toUInt64(call.2)) AS answered,
    sum(toUInt64(call.3)) AS failed_calls,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(call.4, call.2 = 1) AS latency_ms
FROM {db}.events AS e
ARRAY JOIN arrayConcat(
    if(e.attributes['deployment'] != '' AND e.status NOT LIKE 'breaker_%',
        [(e.attributes['deployment'], toUInt8(e.status = 'ok'), toUInt8(0),
          toFloat64OrZero(e.attributes['model_latency_ms']))],
        []),
    arrayMap(d -> (d, toUInt8(0), toUInt8(1), toFloat64(0)),
        if(e.attributes['deployment_errors'] != '', splitByChar(',', e.attributes['deployment_errors']), []))
) AS call
WHERE e.stage = 'infer' AND (e.attributes['deployment'] != '' OR e.attributes['deployment_errors'] != '')
GROUP BY minute, model, deployment;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.deployment_hour_mv TO {db}.deployment_hour AS
SELECT toStartOfHour(minute) AS hour, model, deployment, sum(answered) AS answered,
    sum(failed_calls) AS failed_calls, quantilesTDigestMergeState(0.5, 0.95, 0.99)(latency_ms) AS latency_ms
FROM {db}.deployment_minute
GROUP BY hour, model, deployment
