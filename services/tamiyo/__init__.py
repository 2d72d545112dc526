"""Tamiyo: policy inference (heuristic, random, wait and learned policies)."""
