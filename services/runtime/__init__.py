"""The harness every service shares, and nothing else: the NATS connection and request helpers, the service runner
(micro endpoints, background tasks, shutdown), settings, JetStream bootstrap, durable consumers, KV reads, the
admin/metrics app, tracing, discovery and timing helpers.

May import: leyline_schemas and third-party libraries. Imports no service, no shared library and no operator
tooling (tests/architecture/test_import_graph.py).
"""
