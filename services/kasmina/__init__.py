"""Kasmina: the lifecycle authority (pure rules + bus adapter) and the seed mechanics library (torch)."""
