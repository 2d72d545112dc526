"""Karn: telemetry collection, the run store, the live log, the Sanctum TUI and the HTTP API.

May import: leyline_schemas, services.runtime. No other service.
"""
