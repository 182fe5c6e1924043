"""The pipeline's stages, one module each (validate, admission, sanitize, route, infer,
validate_response), as plain functions testable without Kafka. `agents.chain` runs consecutive
stages in-process; `agents.faust_wiring` turns the chains into Faust agents."""
