"""The policy library: the factored recurrent actor-critic Tamiyo serves and Simic trains, its masked sampling and
scoring, the observation normaliser, the weights format (safetensors blobs) and the policy pointers in the KV store.

A shared library (ARCHITECTURE.md §3): Tamiyo and Simic import it; it imports leyline_schemas, services.runtime,
torch and safetensors, and no service.
"""
