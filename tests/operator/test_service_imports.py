"""What an `esper service NAME` process imports before it serves: services that need no torch must not load it."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import sys
from services.operator.cli import build_parser
from services.operator.registry import service_definition, service_settings

build_parser()
service_settings(sys.argv[1])
service_definition(sys.argv[1])
print("torch" in sys.modules)
"""


@pytest.mark.parametrize(("name", "loads_torch"), [("kasmina", False), ("karn", False), ("tolaria", True)])
def test_only_the_services_that_train_or_infer_load_torch(name: str, loads_torch: bool) -> None:
    result = subprocess.run([sys.executable, "-c", CODE, name], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [str(loads_torch)]
