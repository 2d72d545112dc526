"""Kasmina: the lifecycle authority. Its pure core (transitions, gates, alpha controller, masks, lifecycle, step)
decides every slot's stage; its bus adapter (service.py) answers Tolaria's step requests. The mechanics library
(`services.kasmina.mechanics`) is the torch side of seeds that Tolaria runs in its own process.

May import: leyline_schemas, services.runtime, the shared libraries (services.observation). No other service.
"""
