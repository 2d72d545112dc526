"""Tolaria: hosts, tasks, the epoch loop, the governor and env workers."""
