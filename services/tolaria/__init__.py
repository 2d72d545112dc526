"""Tolaria: the execution engine. Hosts, tasks and data, the epoch loop, the governor and the env workers that
lease envs and drive their episodes step by step over the bus.

May import: leyline_schemas, services.runtime, the shared libraries, and the one lent library:
`services.kasmina.mechanics` (seeds run beside their host; rollback prunes through its `lifecycle` module).
"""
