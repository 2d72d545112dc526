"""Loading the project's stand-alone scripts (deploy/…, not package modules) for tests."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


@cache
def load_script(relative: str) -> ModuleType:
    """The script at REPO/``relative`` as a module (once), registered under its file name."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(f"esper_script_{path.stem}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
