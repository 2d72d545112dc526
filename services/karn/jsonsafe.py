"""Strict JSON for Karn's outputs: every non-finite float becomes null, so no NaN or Infinity ever leaves."""

from __future__ import annotations

import math
from typing import Any


def json_ready(value: Any) -> Any:
    """A copy of builtins data (dicts, lists, scalars) with NaN and ±Infinity replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value
