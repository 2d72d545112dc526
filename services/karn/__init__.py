"""Karn: telemetry collection, the run store, the live log and operator UIs."""
