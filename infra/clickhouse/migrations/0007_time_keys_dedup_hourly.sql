-- 0007: tables laid out for time windows, duplicates dropped before anything counts them, and
-- hourly rollups. `{db}` is replaced by the migration runner. The runner records every
-- statement it completes, so a file that fails half-way resumes at the failed statement.
--
-- Why: raw tables were sorted by (tenant, ...) and read with FINAL, so a one-hour window read
-- every part and granule; the rollups double-counted redelivered events.
--
-- 1. events, requests and feedback are rebuilt partitioned by day and sorted by hour first
--    (toStartOfHour of ts / finished_at / ts), so a window prunes partitions and granules.
--    Existing rows are copied over once (deduplicated with FINAL) and the old tables dropped.
-- 2. The sink writes to `<table>_incoming` (Null engine: stores nothing). A materialized view
--    passes on only rows whose key (event_id, request_id, or feedback_id + ts) is neither
--    already stored nor repeated in the same insert. The raw tables then hold one copy per key,
--    dashboards need no FINAL, and the rollup views (fed from the raw tables) count each row
--    once. The lookup reads only the hours of the inserted rows, widened by 10 minutes each way:
--    a re-processed copy whose timestamp moved by more than that is stored again.
-- 3. Feedback rows get the rated request's model and route at insert time (from requests of the
--    same tenant finished up to a day before the rating), so satisfaction reads a rollup instead
--    of joining raw tables.
-- 4. Rollups per hour (`*_hour`) next to the per-minute ones, filled from the minute rollups;
--    windows of 24 hours and more read them. `answers_hour` counts answers per question for the
--    content-consistency metric.

DROP VIEW IF EXISTS {db}.stage_minute_mv;
DROP VIEW IF EXISTS {db}.request_minute_mv;
DROP VIEW IF EXISTS {db}.feedback_minute_mv;

CREATE TABLE IF NOT EXISTS {db}.events_next
(
    event_id            String,
    request_id          String,
    correlation_id      String,
    tenant              LowCardinality(String),
    stage               LowCardinality(String),
    status              LowCardinality(String),
    ts                  DateTime64(3, 'UTC'),
    duration_ms         Float64,
    model               LowCardinality(String) COMMENT 'empty when no model was involved',
    prompt_tokens       UInt32,
    completion_tokens   UInt32,
    cost_usd            Float64,
    cached              Bool,
    cache_savings_usd   Float64 DEFAULT 0,
    routing_savings_usd Float64 DEFAULT 0,
    error_code          LowCardinality(String) COMMENT 'empty when the stage succeeded',
    flags               Array(LowCardinality(String)),
    attributes          Map(LowCardinality(String), String),
    inserted_at         DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toDate(ts)
ORDER BY (toStartOfHour(ts), tenant, stage, event_id)
TTL toDateTime(ts) + INTERVAL 30 DAY;

INSERT INTO {db}.events_next
    (event_id, request_id, correlation_id, tenant, stage, status, ts, duration_ms, model, prompt_tokens,
     completion_tokens, cost_usd, cached, cache_savings_usd, routing_savings_usd, error_code, flags,
     attributes, inserted_at)
SELECT event_id, request_id, correlation_id, tenant, stage, status, ts, duration_ms, model, prompt_tokens,
    completion_tokens, cost_usd, cached, cache_savings_usd, routing_savings_usd, error_code, flags,
    attributes, inserted_at
FROM {db}.events FINAL;

CREATE TABLE IF NOT EXISTS {db}.requests_next
(
    request_id          String,
    correlation_id      String,
    tenant              LowCardinality(String),
    received_at         DateTime64(3, 'UTC'),
    finished_at         DateTime64(3, 'UTC'),
    status              LowCardinality(String),
    model               LowCardinality(String) COMMENT 'empty when the request never reached a model',
    route               LowCardinality(String) DEFAULT '',
    arm                 LowCardinality(String) DEFAULT '',
    prompt_tokens       UInt32,
    completion_tokens   UInt32,
    max_tokens          UInt32 DEFAULT 0,
    cost_usd            Float64,
    cached              Bool,
    cache_savings_usd   Float64 DEFAULT 0,
    routing_savings_usd Float64 DEFAULT 0,
    latency_ms          Float64,
    groundedness        Nullable(Float64),
    hallucination       Nullable(Bool),
    schema_valid        Nullable(Bool),
    error_code          LowCardinality(String) COMMENT 'empty when status is ok',
    flags               Array(LowCardinality(String)),
    stage               LowCardinality(String) COMMENT 'the stage that ended the request',
    event_id            String COMMENT 'the final event this row was built from',
    inserted_at         DateTime64(6, 'UTC') DEFAULT now64(6),
    question_hash       String DEFAULT '' COMMENT 'hash of the normalised question',
    answer_hash         String DEFAULT '' COMMENT 'hash of the normalised answer'
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toDate(finished_at)
ORDER BY (toStartOfHour(finished_at), tenant, request_id)
TTL toDateTime(received_at) + INTERVAL 30 DAY;

INSERT INTO {db}.requests_next
    (request_id, correlation_id, tenant, received_at, finished_at, status, model, route, arm, prompt_tokens,
     completion_tokens, max_tokens, cost_usd, cached, cache_savings_usd, routing_savings_usd, latency_ms,
     groundedness, hallucination, schema_valid, error_code, flags, stage, event_id, inserted_at,
     question_hash, answer_hash)
SELECT request_id, correlation_id, tenant, received_at, finished_at, status, model, route, arm, prompt_tokens,
    completion_tokens, max_tokens, cost_usd, cached, cache_savings_usd, routing_savings_usd, latency_ms,
    groundedness, hallucination, schema_valid, error_code, flags, stage, event_id, inserted_at,
    question_hash, answer_hash
FROM {db}.requests FINAL;

CREATE TABLE IF NOT EXISTS {db}.feedback_next
(
    feedback_id String,
    request_id  String,
    tenant      LowCardinality(String),
    rating      Int8,
    label       LowCardinality(String),
    comment     String,
    ts          DateTime64(3, 'UTC'),
    model       LowCardinality(String) DEFAULT '' COMMENT 'model of the rated request, empty when not found',
    route       LowCardinality(String) DEFAULT '' COMMENT 'route of the rated request, empty when not found',
    inserted_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toDate(ts)
ORDER BY (toStartOfHour(ts), tenant, feedback_id, ts)
TTL toDateTime(ts) + INTERVAL 30 DAY;

INSERT INTO {db}.feedback_next
    (feedback_id, request_id, tenant, rating, label, comment, ts, model, route, inserted_at)
SELECT f.feedback_id, f.request_id, f.tenant, f.rating, f.label, f.comment, f.ts, r.model, r.route,
    f.inserted_at
FROM {db}.feedback AS f FINAL
LEFT JOIN
(
    SELECT tenant, request_id, argMax(model, inserted_at) AS model, argMax(route, inserted_at) AS route
    FROM {db}.requests_next
    GROUP BY tenant, request_id
) AS r ON f.tenant = r.tenant AND f.request_id = r.request_id;

RENAME TABLE {db}.events TO {db}.events_before_0007, {db}.events_next TO {db}.events,
    {db}.requests TO {db}.requests_before_0007, {db}.requests_next TO {db}.requests,
    {db}.feedback TO {db}.feedback_before_0007, {db}.feedback_next TO {db}.feedback;

DROP TABLE IF EXISTS {db}.events_before_0007;
DROP TABLE IF EXISTS {db}.requests_before_0007;
DROP TABLE IF EXISTS {db}.feedback_before_0007;

-- The sink's insert targets: nothing is stored here, the views below pass rows on. Text
-- columns are plain String (the views convert to LowCardinality in the engine): the client
-- then sends them without building a dictionary per block in Python, twice as fast.
CREATE TABLE IF NOT EXISTS {db}.events_incoming
(
    event_id            String,
    request_id          String,
    correlation_id      String,
    tenant              String,
    stage               String,
    status              String,
    ts                  DateTime64(3, 'UTC'),
    duration_ms         Float64,
    model               String,
    prompt_tokens       UInt32,
    completion_tokens   UInt32,
    cost_usd            Float64,
    cached              Bool,
    cache_savings_usd   Float64 DEFAULT 0,
    routing_savings_usd Float64 DEFAULT 0,
    error_code          String,
    flags               Array(String),
    attributes          Map(String, String),
    inserted_at         DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = Null;

CREATE TABLE IF NOT EXISTS {db}.requests_incoming
(
    request_id          String,
    correlation_id      String,
    tenant              String,
    received_at         DateTime64(3, 'UTC'),
    finished_at         DateTime64(3, 'UTC'),
    status              String,
    model               String,
    route               String DEFAULT '',
    arm                 String DEFAULT '',
    prompt_tokens       UInt32,
    completion_tokens   UInt32,
    max_tokens          UInt32 DEFAULT 0,
    cost_usd            Float64,
    cached              Bool,
    cache_savings_usd   Float64 DEFAULT 0,
    routing_savings_usd Float64 DEFAULT 0,
    latency_ms          Float64,
    groundedness        Nullable(Float64),
    hallucination       Nullable(Bool),
    schema_valid        Nullable(Bool),
    error_code          String,
    flags               Array(String),
    stage               String,
    event_id            String,
    inserted_at         DateTime64(6, 'UTC') DEFAULT now64(6),
    question_hash       String DEFAULT '',
    answer_hash         String DEFAULT ''
)
ENGINE = Null;

CREATE TABLE IF NOT EXISTS {db}.feedback_incoming
(
    feedback_id String,
    request_id  String,
    tenant      String,
    rating      Int8,
    label       String,
    comment     String,
    ts          DateTime64(3, 'UTC'),
    inserted_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = Null;

-- Inside a materialized view, `<table>_incoming` stands for the inserted block only.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_dedup_mv TO {db}.events AS
SELECT *
FROM {db}.events_incoming AS i
WHERE i.event_id NOT IN
(
    SELECT event_id
    FROM {db}.events
    WHERE toStartOfHour(ts) IN (
        SELECT arrayJoin([toStartOfHour(ts - INTERVAL 10 MINUTE), toStartOfHour(ts + INTERVAL 10 MINUTE)])
        FROM {db}.events_incoming)
        AND event_id IN (SELECT event_id FROM {db}.events_incoming)
)
LIMIT 1 BY i.event_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.requests_dedup_mv TO {db}.requests AS
SELECT *
FROM {db}.requests_incoming AS i
WHERE i.request_id NOT IN
(
    SELECT request_id
    FROM {db}.requests
    WHERE toStartOfHour(finished_at) IN (
        SELECT arrayJoin([
            toStartOfHour(finished_at - INTERVAL 10 MINUTE), toStartOfHour(finished_at + INTERVAL 10 MINUTE)])
        FROM {db}.requests_incoming)
        AND request_id IN (SELECT request_id FROM {db}.requests_incoming)
)
LIMIT 1 BY i.request_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_dedup_mv TO {db}.feedback AS
SELECT i.feedback_id AS feedback_id, i.request_id AS request_id, i.tenant AS tenant, i.rating AS rating,
    i.label AS label, i.comment AS comment, i.ts AS ts, r.model AS model, r.route AS route,
    i.inserted_at AS inserted_at
FROM {db}.feedback_incoming AS i
LEFT JOIN
(
    SELECT tenant, request_id, argMax(model, inserted_at) AS model, argMax(route, inserted_at) AS route
    FROM {db}.requests
    WHERE finished_at >= (SELECT min(ts) FROM {db}.feedback_incoming) - INTERVAL 1 DAY
        AND request_id IN (SELECT request_id FROM {db}.feedback_incoming)
    GROUP BY tenant, request_id
) AS r ON i.tenant = r.tenant AND i.request_id = r.request_id
WHERE (i.feedback_id, i.ts) NOT IN
(
    SELECT feedback_id, ts
    FROM {db}.feedback
    WHERE toStartOfHour(ts) IN (SELECT toStartOfHour(ts) FROM {db}.feedback_incoming)
        AND feedback_id IN (SELECT feedback_id FROM {db}.feedback_incoming)
)
LIMIT 1 BY i.feedback_id, i.ts;

-- The per-minute rollup views again, now fed by the deduplicated raw tables.
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

-- Feedback rollups split by the rated model and route (rows from before 0007 keep '' there).
ALTER TABLE {db}.feedback_minute
    ADD COLUMN IF NOT EXISTS model LowCardinality(String),
    ADD COLUMN IF NOT EXISTS route LowCardinality(String),
    MODIFY ORDER BY (minute, tenant, label, model, route);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_minute_mv TO {db}.feedback_minute AS
SELECT
    toStartOfMinute(f.ts) AS minute,
    f.tenant AS tenant,
    f.label AS label,
    f.model AS model,
    f.route AS route,
    count() AS messages,
    sum(toInt64(f.rating)) AS rating_sum,
    countIf(f.rating < 0) AS negative,
    countIf(f.rating > 0) AS positive
FROM {db}.feedback AS f
GROUP BY minute, tenant, label, model, route;

-- Hourly rollups: the minute rollups' columns per hour, filled from the minute rollups (the
-- backfill below, then a view per minute table).
-- stage_hour leaves out tenant and error code (what reads stage rollups groups by stage, model
-- and status): about 30 rows an hour instead of several hundred.
CREATE TABLE IF NOT EXISTS {db}.stage_hour
(
    hour                DateTime('UTC'),
    stage               LowCardinality(String),
    model               LowCardinality(String),
    status              LowCardinality(String),
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
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, stage, model, status)
TTL hour + INTERVAL 400 DAY;

INSERT INTO {db}.stage_hour
SELECT toStartOfHour(minute) AS hour, stage, model, status, sum(events), sum(cached),
    sum(prompt_tokens), sum(completion_tokens), sum(cost_usd), sum(cache_savings_usd),
    sum(routing_savings_usd), quantilesTDigestMergeState(0.5, 0.95, 0.99)(duration_ms)
FROM {db}.stage_minute
GROUP BY hour, stage, model, status;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.stage_hour_mv TO {db}.stage_hour AS
SELECT toStartOfHour(minute) AS hour, stage, model, status,
    sum(events) AS events, sum(cached) AS cached, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(cost_usd) AS cost_usd,
    sum(cache_savings_usd) AS cache_savings_usd, sum(routing_savings_usd) AS routing_savings_usd,
    quantilesTDigestMergeState(0.5, 0.95, 0.99)(duration_ms) AS duration_ms
FROM {db}.stage_minute
GROUP BY hour, stage, model, status;

CREATE TABLE IF NOT EXISTS {db}.request_hour
(
    hour                  DateTime('UTC'),
    tenant                LowCardinality(String),
    model                 LowCardinality(String),
    route                 LowCardinality(String),
    status                LowCardinality(String),
    error_code            LowCardinality(String),
    requests              SimpleAggregateFunction(sum, UInt64),
    cached                SimpleAggregateFunction(sum, UInt64),
    prompt_tokens         SimpleAggregateFunction(sum, UInt64),
    completion_tokens     SimpleAggregateFunction(sum, UInt64),
    capped_requests       SimpleAggregateFunction(sum, UInt64),
    capped_completion     SimpleAggregateFunction(sum, UInt64),
    capped_max_tokens     SimpleAggregateFunction(sum, UInt64),
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
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, tenant, model, route, status, error_code)
TTL hour + INTERVAL 400 DAY;

INSERT INTO {db}.request_hour
SELECT toStartOfHour(minute) AS hour, tenant, model, route, status, error_code, sum(requests), sum(cached),
    sum(prompt_tokens), sum(completion_tokens), sum(capped_requests), sum(capped_completion),
    sum(capped_max_tokens), sum(cost_usd), sum(cache_savings_usd), sum(routing_savings_usd),
    sum(grounded_checked), sum(groundedness_sum), sum(hallucination_checked), sum(hallucinations),
    sum(schema_checked), sum(schema_valid), quantilesTDigestMergeState(0.5, 0.95, 0.99)(latency_ms)
FROM {db}.request_minute
GROUP BY hour, tenant, model, route, status, error_code;

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

CREATE TABLE IF NOT EXISTS {db}.feedback_hour
(
    hour       DateTime('UTC'),
    tenant     LowCardinality(String),
    label      LowCardinality(String),
    model      LowCardinality(String),
    route      LowCardinality(String),
    messages   SimpleAggregateFunction(sum, UInt64),
    rating_sum SimpleAggregateFunction(sum, Int64),
    negative   SimpleAggregateFunction(sum, UInt64),
    positive   SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, tenant, label, model, route)
TTL hour + INTERVAL 400 DAY;

INSERT INTO {db}.feedback_hour
SELECT toStartOfHour(minute) AS hour, tenant, label, model, route, sum(messages), sum(rating_sum),
    sum(negative), sum(positive)
FROM {db}.feedback_minute
GROUP BY hour, tenant, label, model, route;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_hour_mv TO {db}.feedback_hour AS
SELECT toStartOfHour(minute) AS hour, tenant, label, model, route, sum(messages) AS messages,
    sum(rating_sum) AS rating_sum, sum(negative) AS negative, sum(positive) AS positive
FROM {db}.feedback_minute
GROUP BY hour, tenant, label, model, route;

-- Answers per (hour, model, question, answer) for content consistency: a question asked twice
-- in the window is consistent when it got one distinct answer.
CREATE TABLE IF NOT EXISTS {db}.answers_hour
(
    hour          DateTime('UTC'),
    model         LowCardinality(String),
    question_hash String,
    answer_hash   String,
    requests      SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, model, question_hash, answer_hash)
TTL hour + INTERVAL 400 DAY;

INSERT INTO {db}.answers_hour
SELECT toStartOfHour(finished_at) AS hour, model, question_hash, answer_hash, count()
FROM {db}.requests
WHERE status = 'ok' AND question_hash != '' AND answer_hash != ''
GROUP BY hour, model, question_hash, answer_hash;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.answers_hour_mv TO {db}.answers_hour AS
SELECT toStartOfHour(r.finished_at) AS hour, r.model AS model, r.question_hash AS question_hash,
    r.answer_hash AS answer_hash, count() AS requests
FROM {db}.requests AS r
WHERE r.status = 'ok' AND r.question_hash != '' AND r.answer_hash != ''
GROUP BY hour, model, question_hash, answer_hash
