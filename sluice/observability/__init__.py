"""Operational visibility: Prometheus metrics of every process, alert rules, consumer lag."""
