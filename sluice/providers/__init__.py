"""Model providers: the model catalog, the HTTP clients that call model servers (OpenAI-compatible
chat completions and Anthropic messages), and the resilience primitives the infer stage composes
(backoff, Retry-After, circuit breakers, per-model concurrency gates)."""
