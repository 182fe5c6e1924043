"""Local stand-ins for external services (the OpenAI-compatible model simulator), for tests and demos."""
