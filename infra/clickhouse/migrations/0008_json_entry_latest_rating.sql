-- 0008: the engine parses the sink's events, and only the latest rating of a request counts.
-- `{db}` is replaced by the migration runner, which resumes a half-applied file at the
-- statement that failed.
--
-- 1. `events_json` (Null engine) takes the event records as they came off Kafka, one JSON
--    object per line (JSONEachRow). Two views turn them into the rows of `events_incoming` and,
--    for the events that carry a request summary, `requests_incoming`; the deduplicating views
--    of 0007 take it from there. Why: building typed columns in Python cost about three times
--    what the engine spends parsing the same JSON in C++.
--    The sink has already checked every record against the Event schema (and dead-lettered the
--    rest), so these views only convert. Where ClickHouse could read a value the schema allows
--    differently from how the schema reads it, the view refuses the whole insert instead and
--    the sink falls back to its typed insert: times must be ISO 8601 text (a number may be
--    seconds or milliseconds), summary numbers and booleans must be JSON numbers and booleans.
-- 2. Ratings: a request rated again counts only its latest rating (by rating time, then
--    feedback_id), in every figure. `feedback_latest` holds the latest rating per (tenant,
--    request_id). A view on `feedback` (fed only with ratings not seen before, 0007) compares
--    each request's newest rating in the insert with the stored latest one and, when it is
--    newer, writes two signed changes to `feedback_changes` (Null engine): -1 for the replaced
--    rating in its own minute, +1 for the new one. The rollups sum the signed changes, so they
--    stay exact and additive; `feedback_latest` takes the +1 rows. A redelivered or older
--    rating changes nothing.
-- 3. Feedback rollups shaped by what reads them, without tenant (nothing reads feedback by
--    tenant): per minute by label (`feedback_minute`) and by model and route
--    (`feedback_route_minute`), with 256-row granules; per hour by label, model and route. A
--    minute then holds at most as many rows as the query has groups, however many ratings come
--    in: 0007's minute rollup (tenant x label x model x route) held about one row per rating, so
--    a one-hour window read ten times the rows at ten times the traffic.
-- 4. Lookups by key read only the granules of the keys looked up: feedback_latest and
--    `request_routes` (model and route of the requests stored in the last two days, for the
--    ratings that name them; kept by time of storing, so a sink catching up on old traffic
--    still finds them) are sorted by request and have small granules (256 rows), so a batch of
--    ratings reads a few hundred rows per rating however large the tables grow. The rating's
--    join used to read the request_id of every request of the last day.
-- Existing ratings are folded into feedback_latest once and the rollups rebuilt from it.

DROP VIEW IF EXISTS {db}.feedback_minute_mv;
DROP VIEW IF EXISTS {db}.feedback_hour_mv;
DROP VIEW IF EXISTS {db}.feedback_dedup_mv;

CREATE TABLE IF NOT EXISTS {db}.request_routes
(
    tenant      LowCardinality(String),
    request_id  String,
    finished_at DateTime64(3, 'UTC'),
    model       LowCardinality(String),
    route       LowCardinality(String),
    inserted_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toDate(inserted_at)
ORDER BY (request_id, tenant)
TTL toDateTime(inserted_at) + INTERVAL 2 DAY
SETTINGS index_granularity = 256;

INSERT INTO {db}.request_routes (tenant, request_id, finished_at, model, route, inserted_at)
SELECT tenant, request_id, finished_at, model, route, inserted_at
FROM {db}.requests
WHERE finished_at >= now64(3) - INTERVAL 2 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.request_routes_mv TO {db}.request_routes AS
SELECT r.tenant AS tenant, r.request_id AS request_id, r.finished_at AS finished_at, r.model AS model,
    r.route AS route, r.inserted_at AS inserted_at
FROM {db}.requests AS r;

-- 0007's entry view for ratings, now joining request_routes (by key) instead of requests.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_dedup_mv TO {db}.feedback AS
SELECT i.feedback_id AS feedback_id, i.request_id AS request_id, i.tenant AS tenant, i.rating AS rating,
    i.label AS label, i.comment AS comment, i.ts AS ts, r.model AS model, r.route AS route,
    i.inserted_at AS inserted_at
FROM {db}.feedback_incoming AS i
LEFT JOIN
(
    SELECT tenant, request_id, argMax(model, inserted_at) AS model, argMax(route, inserted_at) AS route
    FROM {db}.request_routes
    WHERE request_id IN (SELECT request_id FROM {db}.feedback_incoming)
        AND finished_at >= (SELECT min(ts) FROM {db}.feedback_incoming) - INTERVAL 1 DAY
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

CREATE TABLE IF NOT EXISTS {db}.events_json
(
    event_id            String,
    request_id          String,
    correlation_id      String,
    tenant              String,
    stage               String,
    status              String,
    ts                  String,
    duration_ms         Float64 DEFAULT 0,
    model               Nullable(String),
    prompt_tokens       Int64 DEFAULT 0,
    completion_tokens   Int64 DEFAULT 0,
    cost_usd            Float64 DEFAULT 0,
    cached              Bool DEFAULT false,
    cache_savings_usd   Float64 DEFAULT 0,
    routing_savings_usd Float64 DEFAULT 0,
    error_code          Nullable(String),
    flags               Array(String),
    attributes          Map(String, String),
    summary             Nullable(String) COMMENT 'the summary object as JSON text (read_objects_as_strings)'
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_json_mv TO {db}.events_incoming AS
SELECT
    e.event_id AS event_id,
    e.request_id AS request_id,
    e.correlation_id AS correlation_id,
    e.tenant AS tenant,
    e.stage AS stage,
    e.status AS status,
    parseDateTime64BestEffort(
        if(match(e.ts, '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt _][0-9]{2}:[0-9]{2}'), e.ts, 'ts: not an ISO 8601 time'),
        3, 'UTC') AS ts,
    e.duration_ms AS duration_ms,
    ifNull(e.model, '') AS model,
    toUInt32(greatest(0, least(e.prompt_tokens, 4294967295))) AS prompt_tokens,
    toUInt32(greatest(0, least(e.completion_tokens, 4294967295))) AS completion_tokens,
    e.cost_usd AS cost_usd,
    e.cached AS cached,
    e.cache_savings_usd AS cache_savings_usd,
    e.routing_savings_usd AS routing_savings_usd,
    ifNull(e.error_code, '') AS error_code,
    e.flags AS flags,
    e.attributes AS attributes
FROM {db}.events_json AS e;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.requests_json_mv TO {db}.requests_incoming AS
WITH
    assumeNotNull(e.summary) AS summary,
    JSONExtract(summary, concat('Tuple(received_at String, finished_at String, status String, latency_ms Float64, ',
        'groundedness Nullable(Float64), hallucination Nullable(Bool), schema_valid Nullable(Bool), ',
        'route String, arm String)')) AS s,
    '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt _][0-9]{2}:[0-9]{2}' AS iso,
    throwIf(
        JSONType(summary, 'latency_ms') NOT IN ('Int64', 'UInt64', 'Double')
        OR JSONType(summary, 'groundedness') NOT IN ('Int64', 'UInt64', 'Double', 'Null')
        OR JSONType(summary, 'hallucination') NOT IN ('Bool', 'Null')
        OR JSONType(summary, 'schema_valid') NOT IN ('Bool', 'Null'),
        'summary: a number or boolean that is not a JSON number or boolean') AS unusual,
    e.attributes['max_tokens'] AS max_tokens_text
SELECT
    e.request_id AS request_id,
    e.correlation_id AS correlation_id,
    e.tenant AS tenant,
    parseDateTime64BestEffort(if(match(s.received_at, iso), s.received_at, 'received_at: not an ISO 8601 time'),
        3, 'UTC') AS received_at,
    parseDateTime64BestEffort(if(match(s.finished_at, iso), s.finished_at, 'finished_at: not an ISO 8601 time'),
        3, 'UTC') AS finished_at,
    s.status AS status,
    ifNull(e.model, '') AS model,
    s.route AS route,
    s.arm AS arm,
    toUInt32(greatest(0, least(e.prompt_tokens, 4294967295))) AS prompt_tokens,
    toUInt32(greatest(0, least(e.completion_tokens, 4294967295))) AS completion_tokens,
    if(match(max_tokens_text, '^[0-9]+$'), toUInt32(least(toFloat64(max_tokens_text), 4294967295)), 0) AS max_tokens,
    e.cost_usd AS cost_usd,
    e.cached AS cached,
    e.cache_savings_usd AS cache_savings_usd,
    e.routing_savings_usd AS routing_savings_usd,
    s.latency_ms + unusual AS latency_ms,
    s.groundedness AS groundedness,
    s.hallucination AS hallucination,
    s.schema_valid AS schema_valid,
    ifNull(e.error_code, '') AS error_code,
    e.flags AS flags,
    e.stage AS stage,
    e.event_id AS event_id,
    e.attributes['question_hash'] AS question_hash,
    e.attributes['answer_hash'] AS answer_hash
FROM {db}.events_json AS e
WHERE e.summary IS NOT NULL;

-- The latest rating of each rated request.
CREATE TABLE IF NOT EXISTS {db}.feedback_latest
(
    tenant      LowCardinality(String),
    request_id  String,
    ts          DateTime64(3, 'UTC'),
    feedback_id String,
    rating      Int8,
    label       LowCardinality(String),
    model       LowCardinality(String),
    route       LowCardinality(String)
)
ENGINE = ReplacingMergeTree(ts)
ORDER BY (tenant, request_id)
TTL toDateTime(ts) + INTERVAL 400 DAY
SETTINGS index_granularity = 256;

INSERT INTO {db}.feedback_latest (tenant, request_id, ts, feedback_id, rating, label, model, route)
SELECT tenant, request_id, latest.1, latest.2, latest.3, latest.4, latest.5, latest.6
FROM
(
    SELECT tenant, request_id,
        argMax((ts, feedback_id, rating, label, model, route), (ts, feedback_id)) AS latest
    FROM {db}.feedback
    GROUP BY tenant, request_id
);

-- Minute rollups, one per shape the queries read: by label (feedback, feedback_labels,
-- feedback_series) and by model and route (satisfaction, the route advice). Small granules: a
-- one-hour window reads about its own rows, not a whole granule of 8192.
CREATE TABLE IF NOT EXISTS {db}.feedback_minute_next
(
    minute     DateTime('UTC'),
    label      LowCardinality(String),
    messages   SimpleAggregateFunction(sum, Int64),
    rating_sum SimpleAggregateFunction(sum, Int64),
    negative   SimpleAggregateFunction(sum, Int64),
    positive   SimpleAggregateFunction(sum, Int64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, label)
TTL minute + INTERVAL 400 DAY
SETTINGS index_granularity = 256;

INSERT INTO {db}.feedback_minute_next
SELECT toStartOfMinute(ts) AS minute, label, count(), sum(toInt64(rating)), countIf(rating < 0),
    countIf(rating > 0)
FROM {db}.feedback_latest FINAL
GROUP BY minute, label;

CREATE TABLE IF NOT EXISTS {db}.feedback_route_minute
(
    minute     DateTime('UTC'),
    model      LowCardinality(String),
    route      LowCardinality(String),
    messages   SimpleAggregateFunction(sum, Int64),
    rating_sum SimpleAggregateFunction(sum, Int64),
    negative   SimpleAggregateFunction(sum, Int64),
    positive   SimpleAggregateFunction(sum, Int64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, model, route)
TTL minute + INTERVAL 400 DAY
SETTINGS index_granularity = 256;

INSERT INTO {db}.feedback_route_minute
SELECT toStartOfMinute(ts) AS minute, model, route, count(), sum(toInt64(rating)), countIf(rating < 0),
    countIf(rating > 0)
FROM {db}.feedback_latest FINAL
GROUP BY minute, model, route;

-- Hourly: every dimension (an hour holds at most label x model x route rows).
CREATE TABLE IF NOT EXISTS {db}.feedback_hour_next
(
    hour       DateTime('UTC'),
    label      LowCardinality(String),
    model      LowCardinality(String),
    route      LowCardinality(String),
    messages   SimpleAggregateFunction(sum, Int64),
    rating_sum SimpleAggregateFunction(sum, Int64),
    negative   SimpleAggregateFunction(sum, Int64),
    positive   SimpleAggregateFunction(sum, Int64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, label, model, route)
TTL hour + INTERVAL 400 DAY;

INSERT INTO {db}.feedback_hour_next
SELECT toStartOfHour(ts) AS hour, label, model, route, count(), sum(toInt64(rating)), countIf(rating < 0),
    countIf(rating > 0)
FROM {db}.feedback_latest FINAL
GROUP BY hour, label, model, route;

RENAME TABLE {db}.feedback_minute TO {db}.feedback_minute_before_0008,
    {db}.feedback_minute_next TO {db}.feedback_minute,
    {db}.feedback_hour TO {db}.feedback_hour_before_0008,
    {db}.feedback_hour_next TO {db}.feedback_hour;

DROP TABLE IF EXISTS {db}.feedback_minute_before_0008;
DROP TABLE IF EXISTS {db}.feedback_hour_before_0008;

-- Signed changes of the latest ratings: stores nothing, the views below pass them on.
CREATE TABLE IF NOT EXISTS {db}.feedback_changes
(
    sign        Int8,
    tenant      String,
    request_id  String,
    ts          DateTime64(3, 'UTC'),
    feedback_id String,
    rating      Int8,
    label       String,
    model       String,
    route       String
)
ENGINE = Null;

-- Inside the view, `{db}.feedback` stands for the inserted (new, deduplicated) ratings only.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_changes_mv TO {db}.feedback_changes AS
SELECT change.1 AS sign, n.tenant AS tenant, n.request_id AS request_id, change.2 AS ts, change.3 AS feedback_id,
    change.4 AS rating, change.5 AS label, change.6 AS model, change.7 AS route
FROM
(
    SELECT f.tenant AS tenant, f.request_id AS request_id,
        argMax((f.ts, f.feedback_id, f.rating, f.label, f.model, f.route), (f.ts, f.feedback_id)) AS newest
    FROM {db}.feedback AS f
    GROUP BY f.tenant, f.request_id
) AS n
LEFT JOIN
(
    SELECT tenant, request_id, 1 AS found,
        argMax((ts, feedback_id, rating, label, model, route), (ts, feedback_id)) AS stored
    FROM {db}.feedback_latest
    WHERE (tenant, request_id) IN (SELECT tenant, request_id FROM {db}.feedback)
    GROUP BY tenant, request_id
) AS o ON n.tenant = o.tenant AND n.request_id = o.request_id
ARRAY JOIN
    arrayConcat(
        [(toInt8(1), n.newest.1, n.newest.2, n.newest.3, toString(n.newest.4), toString(n.newest.5),
          toString(n.newest.6))],
        if(o.found = 1,
            [(toInt8(-1), o.stored.1, o.stored.2, o.stored.3, toString(o.stored.4), toString(o.stored.5),
              toString(o.stored.6))],
            [])) AS change
WHERE o.found = 0 OR (n.newest.1, n.newest.2) > (o.stored.1, o.stored.2);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_latest_mv TO {db}.feedback_latest AS
SELECT c.tenant AS tenant, c.request_id AS request_id, c.ts AS ts, c.feedback_id AS feedback_id,
    c.rating AS rating, c.label AS label, c.model AS model, c.route AS route
FROM {db}.feedback_changes AS c
WHERE c.sign = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_minute_mv TO {db}.feedback_minute AS
SELECT
    toStartOfMinute(c.ts) AS minute,
    c.label AS label,
    sum(toInt64(c.sign)) AS messages,
    sum(toInt64(c.sign) * c.rating) AS rating_sum,
    sum(toInt64(c.sign) * (c.rating < 0)) AS negative,
    sum(toInt64(c.sign) * (c.rating > 0)) AS positive
FROM {db}.feedback_changes AS c
GROUP BY minute, label;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_route_minute_mv TO {db}.feedback_route_minute AS
SELECT
    toStartOfMinute(c.ts) AS minute,
    c.model AS model,
    c.route AS route,
    sum(toInt64(c.sign)) AS messages,
    sum(toInt64(c.sign) * c.rating) AS rating_sum,
    sum(toInt64(c.sign) * (c.rating < 0)) AS negative,
    sum(toInt64(c.sign) * (c.rating > 0)) AS positive
FROM {db}.feedback_changes AS c
GROUP BY minute, model, route;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_hour_mv TO {db}.feedback_hour AS
SELECT
    toStartOfHour(c.ts) AS hour,
    c.label AS label,
    c.model AS model,
    c.route AS route,
    sum(toInt64(c.sign)) AS messages,
    sum(toInt64(c.sign) * c.rating) AS rating_sum,
    sum(toInt64(c.sign) * (c.rating < 0)) AS negative,
    sum(toInt64(c.sign) * (c.rating > 0)) AS positive
FROM {db}.feedback_changes AS c
GROUP BY hour, label, model, route
