"""Every analytics metric, defined once as SQL: the dashboards, `sluice dashboard`, the alert
evaluator and the documentation (docs/metrics.md, generated from this module) all read these.

They read rollups, never the raw events: windows under 24 hours read the per-minute rollups
(`stage_minute`, `request_minute`, `feedback_minute`, `feedback_route_minute`,
`deployment_minute`), longer ones the hourly rollups of migrations 0007 and 0009 (`stage_hour`,
`request_hour`, `feedback_hour`, `deployment_hour`), so a query's cost follows the window's
length, not the table's size. Counts and sums are exact; percentiles merge t-digest states.
The window is the bound parameter `{minutes:UInt32}` and starts at the minute (hour) boundary
`minutes` ago, so it spans up to one bucket more than asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.warehouse.named import NamedQuery

# The seed's cost ladder: what 1K tokens cost on its premium, standard, efficient and budget rungs.
COST_LADDER_USD = (0.12, 0.06, 0.02, 0.007)

# Rollup SQL is written once with these tokens and expanded per grain (minute, hour).
ROLLUP_WINDOW = "@WINDOW@"
FILL = "@FILL@"
GRAINS = {
    "minute": {
        "@WINDOW@": "t.minute >= toStartOfMinute(now() - toIntervalMinute({minutes:UInt32}))",
        "@FILL@": "ORDER BY minute WITH FILL"
        " FROM toStartOfMinute(now() - toIntervalMinute({minutes:UInt32}))"
        " TO toStartOfMinute(now()) + 60 STEP 60",
        "@T@": "t.minute",
        "_@G@ ": "_minute ",
    },
    "hour": {
        "@WINDOW@": "t.hour >= toStartOfHour(now() - toIntervalMinute({minutes:UInt32}))",
        "@FILL@": "ORDER BY minute WITH FILL"
        " FROM toStartOfHour(now() - toIntervalMinute({minutes:UInt32}))"
        " TO toStartOfHour(now()) + 3600 STEP 3600",
        "@T@": "t.hour",
        "_@G@ ": "_hour ",
    },
}
# Request and replica rollups keep latency as t-digest states; the stage rollups keep durations
# as DDSketch states (migration 0012: within 2% of the true value, and a state's size, so a
# merge's cost, bounded however many events of a busy minute went in).
QUANTILES = "quantilesTDigestMerge(0.5, 0.95, 0.99)"
STAGE_SKETCH_ARGS = "0.02, 0.5, 0.95, 0.99"
STAGE_QUANTILES = f"quantilesDDMerge({STAGE_SKETCH_ARGS})"
PCT = """
    round({q}({col})[1], 1) AS p50_ms,
    round({q}({col})[2], 1) AS p95_ms,
    round({q}({col})[3], 1) AS p99_ms"""
MODEL = "if(t.model = '', '(none)', t.model)"
# Error codes grouped by whose problem they are.
CATEGORY = """multiIf(
        error_code = '', 'none',
        error_code IN ('invalid_request', 'payload_too_large', 'unauthorized'), 'client',
        error_code IN ('rate_limited', 'budget_exceeded'), 'limits',
        error_code IN ('prompt_injection', 'policy_violation'), 'safety',
        error_code IN ('model_unavailable', 'timeout'), 'upstream',
        error_code = 'response_invalid', 'quality',
        'internal')"""


def _grained(template: str, grain: str) -> str:
    for token, text in GRAINS[grain].items():
        template = template.replace(token, text)
    return template


def rollup_query(name: str, doc: str, template: str) -> NamedQuery:
    """A query over the rollups: per-minute SQL, and the same over the hourly rollups."""
    return NamedQuery(name, doc, _grained(template, "minute"), _grained(template, "hour"))


def pct(col: str, quantiles: str = QUANTILES) -> str:
    return PCT.format(q=quantiles, col=f"t.{col}")


LATENCY_BY_STAGE = rollup_query(
    "latency_by_stage",
    "Stage latency p50/p95/p99 (ms) by stage (pipeline order) and model, with event and error "
    "counts. Breaker transitions are not work and are left out.",
    f"""
SELECT
    stage,
    {MODEL} AS model,
    sum(t.events) AS events,
    sumIf(t.events, status NOT IN ('ok', 'duplicate')) AS errors,{pct("duration_ms", STAGE_QUANTILES)}
FROM {{db}}.stage_@G@ AS t
WHERE {ROLLUP_WINDOW} AND status NOT LIKE 'breaker_%'
GROUP BY stage, model
ORDER BY indexOf(['validate', 'sanitize', 'route', 'infer', 'validate_response'], stage), stage, model
""",
)

MODELS = rollup_query(
    "models",
    "Per model: requests, error rate, end-to-end latency p50/p95/p99 (ms), cost, cost per "
    "request, tokens, cache hit rate and hallucination rate. '(none)' = ended before a model.",
    f"""
SELECT
    {MODEL} AS model,
    sum(t.requests) AS requests,
    sumIf(t.requests, status != 'ok') AS errors,
    round(errors / requests, 4) AS error_rate,{pct("latency_ms")},
    round(sum(t.cost_usd), 6) AS cost_usd,
    round(cost_usd / requests, 6) AS cost_per_request,
    sum(t.prompt_tokens) AS prompt_tokens,
    sum(t.completion_tokens) AS completion_tokens,
    round(sum(t.cached) / requests, 4) AS cache_hit_rate,
    round(sum(t.hallucinations) / nullIf(sum(t.hallucination_checked), 0), 4) AS hallucination_rate
FROM {{db}}.request_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY model
ORDER BY requests DESC, model
""",
)

TOKEN_UTILISATION = rollup_query(
    "token_utilisation",
    "Per model: completion_share = completion tokens / max_tokens of the requests that set "
    "max_tokens (how much of the allowance answers use); prompt_share = prompt / all tokens.",
    f"""
SELECT
    {MODEL} AS model,
    sum(t.requests) AS requests,
    round(sum(t.prompt_tokens) / requests, 1) AS avg_prompt_tokens,
    round(sum(t.completion_tokens) / requests, 1) AS avg_completion_tokens,
    round(sum(t.capped_completion) / nullIf(sum(t.capped_max_tokens), 0), 4) AS completion_share,
    round(sum(t.prompt_tokens)
        / nullIf(sum(t.prompt_tokens) + sum(t.completion_tokens), 0), 4) AS prompt_share
FROM {{db}}.request_@G@ AS t
WHERE {ROLLUP_WINDOW} AND model != ''
GROUP BY model
ORDER BY requests DESC, model
""",
)

ERRORS_BY_CATEGORY = rollup_query(
    "errors_by_category",
    "Failed requests by category (client, limits, safety, upstream, quality, internal) and "
    "error code; rate = their share of all finished requests in the window.",
    f"""
SELECT category, error_code, requests, round(requests / total, 4) AS rate
FROM
(
    SELECT
        {CATEGORY} AS category,
        error_code,
        sum(t.requests) AS requests,
        sum(sum(t.requests)) OVER () AS total
    FROM {{db}}.request_@G@ AS t
    WHERE {ROLLUP_WINDOW}
    GROUP BY category, error_code
)
WHERE category != 'none'
ORDER BY requests DESC, category, error_code
""",
)

COST_PER_1K = rollup_query(
    "cost_per_1k",
    "Per model: cost per request and per 1K tokens, against the seed's benchmark ladder "
    "($0.12 / $0.06 / $0.02 / $0.007 per 1K): ladder_usd is the cheapest rung the model "
    "stays within (null: dearer than $0.12).",
    f"""
SELECT
    model,
    requests,
    tokens,
    cost_usd,
    round(cost_usd / requests, 6) AS cost_per_request,
    round(cost_usd * 1000 / nullIf(tokens, 0), 6) AS cost_per_1k_tokens,
    arrayFirst(rung -> cost_per_1k_tokens <= rung, [{", ".join(map(str, sorted(COST_LADDER_USD)))}]) AS rung,
    if(rung = 0, NULL, rung) AS ladder_usd
FROM
(
    SELECT
        model,
        sum(t.requests) AS requests,
        sum(t.prompt_tokens) + sum(t.completion_tokens) AS tokens,
        round(sum(t.cost_usd), 6) AS cost_usd
    FROM {{db}}.request_@G@ AS t
    WHERE {ROLLUP_WINDOW} AND model != ''
    GROUP BY model
)
ORDER BY cost_usd DESC, model
""",
)

CACHE = rollup_query(
    "cache",
    "Per model: cache hits, hit rate, what hits saved (cache_savings_usd), what cheaper routing "
    "saved (routing_savings_usd) and savings as a share of what the requests would have cost.",
    f"""
SELECT
    {MODEL} AS model,
    sum(t.requests) AS requests,
    sum(t.cached) AS cache_hits,
    round(cache_hits / requests, 4) AS hit_rate,
    round(sum(t.cache_savings_usd), 6) AS cache_savings_usd,
    round(sum(t.routing_savings_usd), 6) AS routing_savings_usd,
    round((cache_savings_usd + routing_savings_usd)
        / nullIf(sum(t.cost_usd) + cache_savings_usd + routing_savings_usd, 0), 4) AS savings_share
FROM {{db}}.request_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY model
ORDER BY requests DESC, model
""",
)

COST_DISTRIBUTION = rollup_query(
    "cost_distribution",
    "API cost by tenant and model, with each pair's share of the window's total cost.",
    f"""
SELECT
    tenant,
    {MODEL} AS model,
    sum(t.requests) AS requests,
    round(sum(t.cost_usd), 6) AS cost_usd,
    round(sum(t.cost_usd) / nullIf(sum(sum(t.cost_usd)) OVER (), 0), 4) AS share
FROM {{db}}.request_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY tenant, model
ORDER BY cost_usd DESC, tenant, model
""",
)

TOP_ROUTES = rollup_query(
    "top_routes",
    "The 3 most expensive routes (routing rules) by total cost, with cost per request.",
    f"""
SELECT
    if(route = '', '(unrouted)', route) AS route,
    sum(t.requests) AS requests,
    round(sum(t.cost_usd), 6) AS cost_usd,
    round(cost_usd / requests, 6) AS cost_per_request
FROM {{db}}.request_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY route
ORDER BY cost_usd DESC, route
LIMIT 3
""",
)

VALIDITY = rollup_query(
    "validity",
    "Per model: response validity rate = answers that passed review / answers reviewed "
    "(response_invalid counts against it), and schema validity of structured answers.",
    f"""
SELECT
    model,
    sumIf(t.requests, status = 'ok' OR error_code IN ('response_invalid', 'policy_violation')) AS reviewed,
    sumIf(t.requests, error_code = 'response_invalid') AS invalid,
    round(1 - invalid / nullIf(reviewed, 0), 4) AS validity_rate,
    sum(t.schema_checked) AS schema_checked,
    round(sum(t.schema_valid) / nullIf(schema_checked, 0), 4) AS schema_valid_rate
FROM {{db}}.request_@G@ AS t
WHERE {ROLLUP_WINDOW} AND model != ''
GROUP BY model
ORDER BY reviewed DESC, model
""",
)

HALLUCINATION = rollup_query(
    "hallucination",
    "Per model: answers checked for grounding, hallucinations, hallucination frequency and mean "
    "groundedness (0..1) of grounded answers.",
    f"""
SELECT
    model,
    sum(t.hallucination_checked) AS checked,
    sum(t.hallucinations) AS hallucinations,
    round(hallucinations / nullIf(checked, 0), 4) AS hallucination_rate,
    round(sum(t.groundedness_sum) / nullIf(sum(t.grounded_checked), 0), 3) AS avg_groundedness
FROM {{db}}.request_@G@ AS t
WHERE {ROLLUP_WINDOW} AND model != ''
GROUP BY model
ORDER BY checked DESC, model
""",
)

CONSISTENCY = NamedQuery(
    "consistency",
    "Content consistency per model: among normalised questions asked at least twice, the share "
    "answered the same way every time (divergent = more than one distinct answer). Reads the "
    "hourly answer counts (answers_hour), so the window starts at the hour boundary.",
    _grained(
        """
SELECT
    model,
    count() AS repeated_questions,
    countIf(answers > 1) AS divergent,
    round(1 - divergent / repeated_questions, 4) AS consistency_rate
FROM
(
    SELECT t.model AS model, t.question_hash AS question_hash, uniqExact(t.answer_hash) AS answers
    FROM {db}.answers_hour AS t
    WHERE @WINDOW@
    GROUP BY model, question_hash
    HAVING sum(t.requests) > 1
)
GROUP BY model
ORDER BY repeated_questions DESC, model
""",
        "hour",
    ),
)

# Per minute, ratings by model and route have a rollup of their own (migration 0008); per hour
# they are in feedback_hour.
SATISFACTION_SQL = f"""
SELECT
    if(t.model = '', '(none)', t.model) AS model,
    if(t.route = '', '(unrouted)', t.route) AS route,
    sum(t.messages) AS ratings,
    round(sum(t.rating_sum) / ratings, 3) AS mean_rating,
    round(sum(t.positive) / ratings, 4) AS positive_share,
    round(sum(t.negative) / ratings, 4) AS negative_share
FROM {{db}}.feedback_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY model, route
HAVING ratings != 0
ORDER BY ratings DESC, model, route
"""
SATISFACTION = NamedQuery(
    "satisfaction",
    "User satisfaction from feedback, by model and route: ratings, mean rating (-1..1), positive "
    "and negative shares. Only the latest rating of a request counts, in the minute it was given. "
    "The sink attaches each rating to its request's model and route (same "
    "tenant, request finished up to a day before the rating); '(none)' = request not found.",
    _grained(SATISFACTION_SQL.replace("feedback_@G@ ", "feedback_route_@G@ "), "minute"),
    _grained(SATISFACTION_SQL, "hour"),
)

FEEDBACK_LABELS = rollup_query(
    "feedback_labels",
    "Feedback by label: messages, mean rating and negative count (rollup; the latest rating of "
    "each request).",
    f"""
SELECT
    label,
    sum(t.messages) AS messages,
    round(sum(t.rating_sum) / messages, 3) AS mean_rating,
    sum(t.negative) AS negative
FROM {{db}}.feedback_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY label
HAVING messages != 0
ORDER BY messages DESC, label
""",
)

TIMESERIES = rollup_query(
    "timeseries",
    "One row per minute of the window (per hour from 24 hours on; empty buckets included): "
    "requests, errors, error rate, "
    "latency p50/p95/p99 (ms), cost, cache hits and savings, hallucinations and groundedness.",
    f"""
SELECT
    @T@ AS minute,
    sum(t.requests) AS requests,
    sumIf(t.requests, status != 'ok') AS errors,
    round(errors / requests, 4) AS error_rate,{pct("latency_ms")},
    round(sum(t.cost_usd), 6) AS cost_usd,
    sum(t.cached) AS cache_hits,
    round(sum(t.cache_savings_usd) + sum(t.routing_savings_usd), 6) AS savings_usd,
    sum(t.hallucinations) AS hallucinations,
    round(hallucinations / nullIf(sum(t.hallucination_checked), 0), 4) AS hallucination_rate,
    round(sum(t.groundedness_sum) / nullIf(sum(t.grounded_checked), 0), 3) AS avg_groundedness
FROM {{db}}.request_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY minute
{FILL}
""",
)

FEEDBACK_SERIES = rollup_query(
    "feedback_series",
    "One row per minute of the window (per hour from 24 hours on): feedback messages, mean rating "
    "and negative ratings (the latest rating of each request, in the minute it was given).",
    f"""
SELECT
    @T@ AS minute,
    sum(t.messages) AS messages,
    round(sum(t.rating_sum) / nullIf(messages, 0), 3) AS mean_rating,
    sum(t.negative) AS negative
FROM {{db}}.feedback_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY minute
{FILL}
""",
)

BREAKERS = rollup_query(
    "breakers",
    "Circuit-breaker transitions per model (infer events with status breaker_*): how often each "
    "state was entered and the latest state.",
    f"""
SELECT
    model,
    sumIf(t.events, status = 'breaker_open') AS opened,
    sumIf(t.events, status = 'breaker_half_open') AS half_opened,
    sumIf(t.events, status = 'breaker_closed') AS closed,
    argMax(status, @T@) AS latest
FROM {{db}}.stage_@G@ AS t
WHERE {ROLLUP_WINDOW} AND status LIKE 'breaker_%'
GROUP BY model
ORDER BY model
""",
)

DEPLOYMENTS = rollup_query(
    "deployments",
    "Per replica (deployment) of a model: calls answered, failed calls and error rate, and model "
    "latency p50/p95/p99 (ms) of the answered ones. From the infer events' attributes "
    "`deployment` (the replica that answered or was called last) and `deployment_errors` (the "
    "replicas whose calls failed on the way), rolled up per minute and hour (migration 0009).",
    f"""
SELECT
    t.model AS model,
    t.deployment AS deployment,
    sum(t.answered) AS answered,
    sum(t.failed_calls) AS failed_calls,
    round(failed_calls / nullIf(answered + failed_calls, 0), 4) AS error_rate,
    if(answered = 0, NULL, round({QUANTILES}(t.latency_ms)[1], 1)) AS p50_ms,
    if(answered = 0, NULL, round({QUANTILES}(t.latency_ms)[2], 1)) AS p95_ms,
    if(answered = 0, NULL, round({QUANTILES}(t.latency_ms)[3], 1)) AS p99_ms
FROM {{db}}.deployment_@G@ AS t
WHERE {ROLLUP_WINDOW}
GROUP BY model, deployment
ORDER BY model, deployment
""",
)


@dataclass(frozen=True)
class AlertMetric:
    """A metric alert rules can name: a query whose one row has a `value` (NULL: no data)."""

    query: NamedQuery
    unit: str


def _alert(name: str, doc: str, select: str, where: str = "") -> NamedQuery:
    extra = f" AND {where}" if where else ""
    sql = f"SELECT {select} AS value FROM {{db}}.request_@G@ AS t WHERE {ROLLUP_WINDOW}{extra}"
    return rollup_query(f"alert_{name}", doc, sql)


ALERT_METRICS: dict[str, AlertMetric] = {
    "error_rate": AlertMetric(
        _alert(
            "error_rate",
            "Alert metric: failed / finished requests over the window (0..1).",
            "sumIf(t.requests, status != 'ok') / nullIf(sum(t.requests), 0)",
        ),
        "ratio",
    ),
    "p95_latency_ms": AlertMetric(
        _alert(
            "p95_latency_ms",
            "Alert metric: end-to-end p95 latency (ms) of requests finished in the window.",
            f"if(sum(t.requests) = 0, NULL, {QUANTILES}(t.latency_ms)[2])",
        ),
        "ms",
    ),
    "cost_per_hour": AlertMetric(
        _alert(
            "cost_per_hour",
            "Alert metric: spend in the window scaled to USD per hour.",
            "sum(t.cost_usd) * 60 / {minutes:UInt32}",
        ),
        "usd/h",
    ),
    "hallucination_rate": AlertMetric(
        _alert(
            "hallucination_rate",
            "Alert metric: hallucinations / answers checked for grounding in the window (0..1).",
            "sum(t.hallucinations) / nullIf(sum(t.hallucination_checked), 0)",
        ),
        "ratio",
    ),
}
# Measured by the process, not the warehouse: the sink's consumer-lag monitor.
PROCESS_ALERT_METRICS = {"consumer_lag": "messages"}

METRIC_QUERIES: tuple[NamedQuery, ...] = (
    MODELS,
    LATENCY_BY_STAGE,
    TOKEN_UTILISATION,
    ERRORS_BY_CATEGORY,
    COST_PER_1K,
    CACHE,
    COST_DISTRIBUTION,
    TOP_ROUTES,
    VALIDITY,
    HALLUCINATION,
    CONSISTENCY,
    SATISFACTION,
    FEEDBACK_LABELS,
    TIMESERIES,
    FEEDBACK_SERIES,
    BREAKERS,
    DEPLOYMENTS,
    *(metric.query for metric in ALERT_METRICS.values()),
)


PROCESS_METRICS_DOC = """\
## Process metrics (Prometheus, `GET /metrics` of every process)

| metric | type | labels | meaning |
|---|---|---|---|
| `process_cpu_seconds_total` | counter | | CPU seconds of the process (process collector) |
| `process_resident_memory_bytes` | gauge | | resident memory of the process |
| `sluice_requests_total` | counter | status, code, model | requests ended by this worker |
| `sluice_stage_events_total` | counter | stage, status | stage events emitted |
| `sluice_stage_duration_seconds` | histogram | stage | stage processing time |
| `sluice_tokens_total` | counter | model, kind | prompt / completion tokens |
| `sluice_cost_usd_total` | counter | model | spend |
| `sluice_cache_hits_total` | counter | model | answers served from cache |
| `sluice_breaker_state` | gauge | model | 0 closed, 1 half-open, 2 open (latest transition seen) |
| `sluice_breaker_transitions_total` | counter | model, state | breaker transitions |
| `sluice_consumer_lag` | gauge | group, topic, stage | end - committed offset over partitions (sink) |
| `sluice_sink_rows_total` | counter | table | rows the sink inserted |
| `sluice_alerts_firing` | gauge | rule | 1 while an alert rule fires (sink) |
| `sluice_http_requests_total` | counter | path, status | front-door HTTP requests (gateway) |
| `sluice_http_request_duration_seconds` | histogram | path | front-door latency (gateway) |
"""


def metrics_markdown() -> str:
    """docs/metrics.md: every metric's name, meaning and SQL (a test keeps the file current)."""
    parts = [
        "# Sluice metrics\n",
        "Generated from `sluice/warehouse/metrics.py` by `python -m sluice.warehouse.metrics`;"
        " do not edit by hand. Each query takes the window `{minutes:UInt32}` and is served by"
        " the sink's query server at `GET /query/<name>?minutes=N`.\n",
    ]
    for query in METRIC_QUERIES:
        parts.append(f"## `{query.name}`\n\n{query.doc}\n\n```sql\n{query.sql.strip()}\n```\n")
        if query.hourly_sql:
            parts.append(f"Windows of 24 hours and more:\n\n```sql\n{query.hourly_sql.strip()}\n```\n")
    parts.append(PROCESS_METRICS_DOC)
    return "\n".join(parts)


if __name__ == "__main__":
    print(metrics_markdown(), end="")
