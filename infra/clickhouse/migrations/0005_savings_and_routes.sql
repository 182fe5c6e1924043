-- 0005: cost optimisation figures and routing identity.
-- cache_savings_usd: what a cache hit would have cost (0 for calls that were paid).
-- routing_savings_usd: the route's most expensive candidate's cost minus the actual cost.
-- route / arm (requests only): the routing rule that chose the model and the experiment arm
-- that served it; the feedback loop joins ratings to them.
-- Idempotent: every statement can be re-run.
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS cache_savings_usd Float64 DEFAULT 0 AFTER cached;
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS routing_savings_usd Float64 DEFAULT 0 AFTER cache_savings_usd;
ALTER TABLE {db}.requests ADD COLUMN IF NOT EXISTS cache_savings_usd Float64 DEFAULT 0 AFTER cached;
ALTER TABLE {db}.requests ADD COLUMN IF NOT EXISTS routing_savings_usd Float64 DEFAULT 0 AFTER cache_savings_usd;
ALTER TABLE {db}.requests ADD COLUMN IF NOT EXISTS route LowCardinality(String) DEFAULT '' AFTER model;
ALTER TABLE {db}.requests ADD COLUMN IF NOT EXISTS arm LowCardinality(String) DEFAULT '' AFTER route
