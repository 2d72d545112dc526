"""The size of torch's thread pool, set from a service's `torch_threads` setting (0 leaves torch's default)."""

from __future__ import annotations


def set_torch_threads(threads: int) -> None:
    """Cap torch's intra-op threads of the calling thread at `threads`; torch is imported only when asked.

    Services that need no torch (Kasmina, Karn) import this module without loading it.
    """
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
