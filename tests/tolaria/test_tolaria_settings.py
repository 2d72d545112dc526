"""Tolaria's acceleration settings: read from the environment, checked at once, and what the env worker is given."""

from __future__ import annotations

import pytest

from services.tolaria.acceleration import choose
from services.tolaria.service import TolariaSettings


def test_amp_and_compile_are_read_from_the_environment() -> None:
    settings = TolariaSettings.from_env(environ={"ESPER_AMP": "off", "ESPER_COMPILE": "true"})
    assert (settings.amp, settings.compile) == ("off", True)
    acceleration = choose("cpu", settings.amp, settings.compile)
    assert acceleration.compile is True
    assert acceleration.autocast_dtype is None


def test_an_unknown_amp_mode_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="ESPER_AMP must be one of auto, bf16, off"):
        TolariaSettings.from_env(environ={"ESPER_AMP": "fp8"})
