"""One thread for all of a Tolaria process's torch work.

OpenMP keeps one spinning thread pool per calling thread: torch calls from several threads (the event loop,
a default executor) leave idle pools spinning against the active one, which cost ~20% per epoch on 2 cores.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch")


async def run_torch(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `fn` on the process's torch thread without blocking the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_executor, functools.partial(fn, *args, **kwargs))
