"""Operator tooling: the `esper` CLI, `esper up`/`down`, the local supervisor and stack, the embedded NATS server,
security (users, permissions, auth files), the run client, the service registry (the one list of the five services),
the per-service CLI commands and the benches that start the whole stack.

Tooling may start and call any service and import any package; nothing but tooling imports it.
"""
