"""Sluice core: Faust app, settings, CLI, client, warehouse, providers and local services."""

__version__ = "0.1.0"
