"""Tamiyo: the decision service. Serves the built-in policies (heuristic, random, wait) and learned lines from the
policy library (`services.policy`), validates every DecisionRequest, and swaps lines live from the policy pointers.

May import: leyline_schemas, services.runtime, the shared libraries (services.policy). No other service.
"""
