"""Device-dependent speed-ups: bf16 autocast, pinned host memory, optional torch.compile. Off or harmless on CPU."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

log = logging.getLogger("esper.tolaria.acceleration")


@dataclass(frozen=True)
class Acceleration:
    device: torch.device
    autocast_dtype: torch.dtype | None = None
    pin_memory: bool = False
    compile: bool = False

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16 autocast on devices that support it; a no-op elsewhere (the CPU path CI tests)."""
        if self.autocast_dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
            yield

    def host_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """Pinned host memory so that `.to(device, non_blocking=True)` really overlaps the copy."""
        return tensor.pin_memory() if self.pin_memory and not tensor.is_pinned() else tensor


AMP_MODES = ("auto", "bf16", "off")


def choose(device: str, amp: str = "auto", compile_model: bool = False) -> Acceleration:
    """`amp`: auto (bf16 where the GPU supports it), bf16, or off."""
    dev = torch.device(device)
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be auto, bf16 or off, got {amp!r}")
    cuda = dev.type == "cuda" and torch.cuda.is_available()
    dtype = None
    if cuda and amp != "off" and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    elif amp == "bf16" and not cuda:
        log.warning("bf16 autocast requested on %s: running in fp32", dev)
    return Acceleration(device=dev, autocast_dtype=dtype, pin_memory=cuda, compile=compile_model)
