-- 0012: stage durations kept as DDSketch states (2% relative accuracy) instead of t-digests,
-- and the per-minute request rollup in index granules of 256 rows. `{db}` is replaced by the
-- migration runner, which records every completed statement (a failed file resumes there).
--
-- Why, sketches: a window query merges one latency state per rollup row. A t-digest state grows
-- with the values it holds, up to a few hundred centroids. A stage rollup row holds every event
-- of a (minute, stage, model, status): tens of values at 16 requests a second, hundreds at 160.
-- So the one-hour stage latency query cost 2.2 times as much on a warehouse ten times as busy,
-- with as many rows. A DDSketch keeps one counter per logarithmic bucket 4% wide: a state holds a
-- bounded number of counters however many values went in, merging adds counters, and every
-- quantile is within 2% of the true value (a p99 of 1,000 ms reads between 980 and 1,020).
-- Measured on 1M requests over 7 days and over 17 hours (the same table, ten times as busy), one
-- hour of stage states: t-digest 3.1 and 8.0 ms, DDSketch 3.0 and 4.5 ms.
-- The request and replica rollups keep t-digests: keyed by tenant (and replica), their rows hold
-- a few values each, where a t-digest state is the smaller and the faster to merge (2.2 against
-- 3.8 ms for the same hour).
--
-- Why, granules: a window query reads whole granules. `request_minute` was made with the default
-- 8,192 rows a granule, so a one-hour query read up to 8,192 rows more than its window holds (at
-- 1M requests, 4,811 rows for 3,911). The other minute rollups already use small granules.
--
-- How: the three tables are made again (`_next`) and their rows copied. For the stage tables
-- the sketch column is dropped and added again with its new type while the table is empty (the
-- engine converts no t-digest), counts and sums are copied as they are, and the sketches are
-- rebuilt from the raw events: the minute rollup's as zero-count rows that carry only the
-- sketch (the AggregatingMergeTree adds them into the copied rows), the hourly one's from the
-- rebuilt minute one. A t-digest cannot be turned into a DDSketch, so stage minutes older than
-- the raw events' retention (30 days by default) keep their counts and costs but no duration
-- quantiles. The request rollup's rows, t-digests included, are copied as they are. The views
-- that write and read the three tables are recreated on the new ones.

DROP VIEW IF EXISTS {db}.stage_minute_mv;
DROP VIEW IF EXISTS {db}.stage_hour_mv;
DROP VIEW IF EXISTS {db}.request_minute_mv;
DROP VIEW IF EXISTS {db}.request_hour_mv;

-- stage_minute
CREATE TABLE IF NOT EXISTS {db}.stage_minute_next AS {db}.stage_minute;

ALTER TABLE {db}.stage_minute_next DROP COLUMN duration_ms;

ALTER TABLE {db}.stage_minute_next ADD COLUMN duration_ms AggregateFunction(quantilesDD(0.02, 0.5, 0.95, 0.99), Float64);

INSERT INTO {db}.stage_minute_next (* EXCEPT (duration_ms))
SELECT * EXCEPT (duration_ms) FROM {db}.stage_minute;

INSERT INTO {db}.stage_minute_next (minute, stage, model, status, duration_ms)
SELECT toStartOfMinute(e.ts) AS minute, e.stage AS stage, e.model AS model, e.status AS status,
    quantilesDDState(0.02, 0.5, 0.95, 0.99)(e.duration_ms) AS duration_ms
FROM {db}.events AS e
GROUP BY minute, stage, model, status;

RENAME TABLE {db}.stage_minute TO {db}.stage_minute_before_0012, {db}.stage_minute_next TO {db}.stage_minute;

DROP TABLE IF EXISTS {db}.stage_minute_before_0012;

-- stage_hour
CREATE TABLE IF NOT EXISTS {db}.stage_hour_next AS {db}.stage_hour;

ALTER TABLE {db}.stage_hour_next DROP COLUMN duration_ms;

ALTER TABLE {db}.stage_hour_next ADD COLUMN duration_ms AggregateFunction(quantilesDD(0.02, 0.5, 0.95, 0.99), Float64);

INSERT INTO {db}.stage_hour_next (* EXCEPT (duration_ms))
SELECT * EXCEPT (duration_ms) FROM {db}.stage_hour;

INSERT INTO {db}.stage_hour_next (hour, stage, model, status, duration_ms)
SELECT toStartOfHour(minute) AS hour, stage, model, status, quantilesDDMergeState(0.02, 0.5, 0.95, 0.99)(duration_ms)
FROM {db}.stage_minute
GROUP BY hour, stage, model, status;

RENAME TABLE {db}.stage_hour TO {db}.stage_hour_before_0012, {db}.stage_hour_next TO {db}.stage_hour;

DROP TABLE IF EXISTS {db}.stage_hour_before_0012;

-- request_minute
CREATE TABLE IF NOT EXISTS {db}.request_minute_next AS {db}.request_minute
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, tenant, model, route, status, error_code)
TTL minute + INTERVAL 400 DAY
SETTINGS index_granularity = 256;

INSERT INTO {db}.request_minute_next SELECT * FROM {db}.request_minute;

RENAME TABLE {db}.request_minute TO {db}.request_minute_before_0012, {db}.request_minute_next TO {db}.request_minute;

DROP TABLE IF EXISTS {db}.request_minute_before_0012;

-- The views, as before; the stage ones write sketches.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.stage_minute_mv TO {db}.stage_minute AS
SELECT
    toStartOfMinute(e.ts) AS minute,
    e.stage AS stage,
    e.model AS model,
    e.status AS status,
    count() AS events,
    countIf(e.cached) AS cached,
    sum(toUInt64(e.prompt_tokens)) AS prompt_tokens,
    sum(toUInt64(e.completion_tokens)) AS completion_tokens,
    sum(e.cost_usd) AS cost_usd,
    sum(e.cache_savings_usd) AS cache_savings_usd,
    sum(e.routing_savings_usd) AS routing_savings_usd,
    quantilesDDState(0.02, 0.5, 0.95, 0.99)(e.duration_ms) AS duration_ms
FROM {db}.events AS e
GROUP BY minute, stage, model, status;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.stage_hour_mv TO {db}.stage_hour AS
SELECT toStartOfHour(minute) AS hour, stage, model, status,
    sum(events) AS events, sum(cached) AS cached, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(cost_usd) AS cost_usd,
    sum(cache_savings_usd) AS cache_savings_usd, sum(routing_savings_usd) AS routing_savings_usd,
    quantilesDDMergeState(0.02, 0.5, 0.95, 0.99)(duration_ms) AS duration_ms
FROM {db}.stage_minute
GROUP BY hour, stage, model, status;

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

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.request_hour_mv TO {db}.request_hour AS
SELECT toStartOfHour(minute) AS hour, tenant, model, route, status, error_code,
    sum(requests) AS requests, sum(cached) AS cached, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(capped_requests) AS capped_requests,
    sum(capped_completion) AS capped_completion, sum(capped_max_tokens) AS capped_max_tokens,
    sum(cost_usd) AS cost_usd, sum(cache_savings_usd) AS cache_savings_usd,
    sum(routing_savings_usd) AS routing_savings_usd, sum(grounded_checked) AS grounded_checked,
    sum(groundedness_sum) AS groundedness_sum, sum(hallucination_checked) AS hallucination_checked,
    sum(hallucinations) AS hallucinations, sum(schema_checked) AS schema_checked,
    sum(schema_valid) AS schema_valid,
    quantilesTDigestMergeState(0.5, 0.95, 0.99)(latency_ms) AS latency_ms
FROM {db}.request_minute
GROUP BY hour, tenant, model, route, status, error_code;
