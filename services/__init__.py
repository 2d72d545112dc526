"""Esper's five services and the runtime harness they share."""

__version__ = "0.1.0"
