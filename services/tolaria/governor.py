"""Tolaria's governor: watches one env's validation loss and rolls the model back to its Last-Known-Good state.

Pure code over python floats and torch state_dicts (reference/tolaria_karn.md §4); it holds no model, no bus and no
telemetry. The epoch loop feeds `check` once per epoch, takes snapshots when `should_snapshot` says so, and on a panic
calls `rollback`, prunes the slots the report names, and clears its optimizers (§4.6).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from torch import nn

SNAPSHOT_EVERY_EPOCHS = 5


class PanicReason(StrEnum):
    NAN = "governor_nan"
    LOBOTOMY = "governor_lobotomy"
    DIVERGENCE = "governor_divergence"


@dataclass(frozen=True)
class GovernorConfig:
    """Thresholds of the governor with the reference defaults (§4.2)."""

    sensitivity: float = 6.0
    multiplier: float = 3.0
    absolute_threshold: float = 12.0
    window: int = 20
    min_history: int = 10
    consecutive: int = 3
    death_penalty: float = 10.0
    random_guess_loss: float = math.log(10)
    lobotomy_mean_fraction: float = 0.6
    lobotomy_tolerance_fraction: float = 0.065

    def __post_init__(self) -> None:
        if self.window < 10:
            raise ValueError(f"governor window must be >= 10 (lobotomy needs 10 samples), got {self.window}")
        if not 1 <= self.min_history <= self.window:
            raise ValueError(f"governor min_history must be in [1, window={self.window}], got {self.min_history}")
        if self.consecutive < 1:
            raise ValueError(f"governor consecutive must be >= 1, got {self.consecutive}")
        if not (math.isfinite(self.random_guess_loss) and self.random_guess_loss > 0):
            raise ValueError(f"random_guess_loss must be finite and positive, got {self.random_guess_loss}")

    @classmethod
    def for_classes(cls, n: int, **overrides: Any) -> GovernorConfig:
        """Config whose random-guess loss is ln(n) for n classes or a vocabulary of n tokens (§4.2)."""
        return cls(random_guess_loss=math.log(n) if n > 1 else math.log(10), **overrides)


@dataclass(frozen=True)
class GovernorVerdict:
    """The outcome of one `check`: healthy, or a panic that asks the caller to roll back."""

    panic: bool
    reason: PanicReason | None = None
    loss_at_panic: float | None = None
    threshold: float | None = None
    consecutive_anomalies: int = 0

    @property
    def healthy(self) -> bool:
        return not self.panic


@dataclass(frozen=True)
class RollbackReport:
    """What a rollback restored; `pruned_keys` are the live-seed keys the snapshot left out, which the caller prunes."""

    reason: PanicReason | None
    loss_at_panic: float | None
    threshold: float | None
    restored_keys: int
    pruned_keys: tuple[str, ...]


class Governor:
    """Per-env loss watchdog with a CPU Last-Known-Good snapshot (§4.1–4.5)."""

    def __init__(self, config: GovernorConfig | None = None, seed_slot_prefix: str = "slots.") -> None:
        self.config = config or GovernorConfig()
        # Keys under this prefix belong to seed slots; only they may be absent from a snapshot (§4.5).
        self.seed_slot_prefix = seed_slot_prefix
        self._history: deque[float] = deque(maxlen=self.config.window)
        self._consecutive = 0
        self._pending: GovernorVerdict | None = None
        self._snapshot: dict[str, Any] | None = None
        self._buffers: dict[str, torch.Tensor] = {}

    @property
    def history(self) -> tuple[float, ...]:
        return tuple(self._history)

    @property
    def consecutive_anomalies(self) -> int:
        return self._consecutive

    @property
    def has_snapshot(self) -> bool:
        return self._snapshot is not None

    def threshold(self) -> float | None:
        """The statistical divergence threshold mean + sensitivity·std over the history (population std)."""
        if not self._history:
            return None
        mean = statistics.fmean(self._history)
        return mean + self.config.sensitivity * statistics.pstdev(self._history, mean)

    def check(self, val_loss: float) -> GovernorVerdict:
        """Judge one epoch's main-config validation loss in the exact order of §4.3."""
        cfg = self.config
        loss = float(val_loss)
        if not math.isfinite(loss):
            # (a) NaN/Inf: panic at once; the consecutive counter is deliberately left as it is.
            return self._panic(PanicReason.NAN, loss)
        n = len(self._history)
        if n >= cfg.min_history:
            # (b) Lobotomy: a model that was learning now predicts uniformly (loss ≈ ln(classes)).
            mean = statistics.fmean(self._history)
            rg = cfg.random_guess_loss
            if mean < cfg.lobotomy_mean_fraction * rg and abs(loss - rg) < cfg.lobotomy_tolerance_fraction * rg:
                return self._panic(PanicReason.LOBOTOMY, loss)
        if n < cfg.min_history:
            # (c) Not enough history to judge divergence.
            self._healthy(loss)
            return GovernorVerdict(panic=False)
        # (d) Divergence needs all three thresholds at once.
        mean = statistics.fmean(self._history)
        statistical = mean + cfg.sensitivity * statistics.pstdev(self._history, mean)
        if loss > cfg.absolute_threshold and loss > statistical and loss > cfg.multiplier * mean:
            self._consecutive += 1  # anomalous losses never enter the history
            if self._consecutive >= cfg.consecutive:
                return self._panic(PanicReason.DIVERGENCE, loss)
            return GovernorVerdict(panic=False, threshold=statistical, consecutive_anomalies=self._consecutive)
        self._healthy(loss)
        return GovernorVerdict(panic=False)

    def should_snapshot(self, epoch: int, fossilized_since_last: bool) -> bool:
        """Refresh the snapshot every 5th epoch or after a fossilization, never while a rollback is pending (§3.10)."""
        if self._pending is not None:
            return False
        return epoch % SNAPSHOT_EVERY_EPOCHS == 0 or fossilized_since_last

    def snapshot(self, model: nn.Module, exclude_prefixes: Iterable[str] = ()) -> int:
        """Store a CPU copy of the state_dict minus the keys of non-fossilized occupied slots; returns the key count.

        The copy is complete before it replaces the previous snapshot (§4.4): CUDA tensors go through persistent
        pinned buffers with non-blocking copies and one synchronisation, which must happen on the default stream.
        """
        prefixes = tuple(exclude_prefixes)
        state = model.state_dict()
        on_cuda = any(isinstance(v, torch.Tensor) and v.is_cuda for v in state.values())
        if on_cuda and torch.cuda.current_stream() != torch.cuda.default_stream():
            raise RuntimeError("governor snapshot must run on the default CUDA stream (§4.4)")
        snap: dict[str, Any] = {}
        for key, value in state.items():
            if key.startswith(prefixes):
                continue
            snap[key] = self._copy_to_cpu(key, value) if isinstance(value, torch.Tensor) else copy.deepcopy(value)
        if on_cuda:
            torch.cuda.synchronize()
        self._buffers = {k: v for k, v in self._buffers.items() if k in snap}
        self._snapshot = snap
        return len(snap)

    def rollback(self, model: nn.Module) -> RollbackReport:
        """Load the snapshot non-strictly into `model`, restoring host (and fossilized seed) weights bit-exactly.

        Any key that is missing or unexpected outside `seed_slot_prefix` is a broken invariant and raises before
        the model is touched. Clears the pending panic and the consecutive counter (§4.5).
        """
        if self._snapshot is None:
            raise RuntimeError("governor rollback without a snapshot: call snapshot() after construction or reset()")
        model_keys = set(model.state_dict().keys())
        snap_keys = set(self._snapshot.keys())
        missing = sorted(model_keys - snap_keys)
        unexpected = sorted(snap_keys - model_keys)
        foreign = [k for k in (*missing, *unexpected) if not k.startswith(self.seed_slot_prefix)]
        if foreign:
            raise RuntimeError(f"governor rollback: keys outside {self.seed_slot_prefix!r} do not match: {foreign[:8]}")
        # The snapshot's own tensors must survive this load for a second rollback, and load_state_dict copies in place.
        model.load_state_dict({k: v for k, v in self._snapshot.items() if k in model_keys}, strict=False)
        pending = self._pending
        self._pending = None
        self._consecutive = 0
        return RollbackReport(
            reason=pending.reason if pending else None,
            loss_at_panic=pending.loss_at_panic if pending else None,
            threshold=pending.threshold if pending else self.threshold(),
            restored_keys=len(snap_keys & model_keys),
            pruned_keys=tuple(missing),
        )

    def reset(self) -> None:
        """Forget history, anomalies and the snapshot for a new episode; the caller snapshots the fresh model (§5.2)."""
        self._history.clear()
        self._consecutive = 0
        self._pending = None
        self._snapshot = None

    def state(self) -> dict[str, Any]:
        """History, anomaly count, pending panic and snapshot as plain values and CPU tensors (a host checkpoint)."""
        pending = self._pending
        return {
            "history": list(self._history),
            "consecutive": self._consecutive,
            "pending": None
            if pending is None
            else {
                "reason": None if pending.reason is None else pending.reason.value,
                "loss_at_panic": pending.loss_at_panic,
                "threshold": pending.threshold,
                "consecutive_anomalies": pending.consecutive_anomalies,
            },
            "snapshot": None if self._snapshot is None else dict(self._snapshot),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Adopt `state()` of another governor with the same config; the snapshot's tensors are used as they are."""
        self._history = deque((float(v) for v in state["history"]), maxlen=self.config.window)
        self._consecutive = int(state["consecutive"])
        pending = state["pending"]
        self._pending = (
            None
            if pending is None
            else GovernorVerdict(
                panic=True,
                reason=None if pending["reason"] is None else PanicReason(pending["reason"]),
                loss_at_panic=pending["loss_at_panic"],
                threshold=pending["threshold"],
                consecutive_anomalies=int(pending["consecutive_anomalies"]),
            )
        )
        self._snapshot = None if state["snapshot"] is None else dict(state["snapshot"])
        self._buffers = {}

    def _healthy(self, loss: float) -> None:
        self._history.append(loss)
        self._consecutive = 0
        self._pending = None

    def _panic(self, reason: PanicReason, loss: float) -> GovernorVerdict:
        verdict = GovernorVerdict(
            panic=True,
            reason=reason,
            loss_at_panic=loss,
            threshold=self.threshold(),
            consecutive_anomalies=self._consecutive,
        )
        self._pending = verdict
        return verdict

    def _copy_to_cpu(self, key: str, value: torch.Tensor) -> torch.Tensor:
        src = value.detach()
        buf = self._buffers.get(key)
        if buf is None or buf.shape != src.shape or buf.dtype != src.dtype:
            buf = torch.empty(src.shape, dtype=src.dtype, device="cpu", pin_memory=src.is_cuda)
            self._buffers[key] = buf
        buf.copy_(src, non_blocking=src.is_cuda)
        return buf


def state_equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """True when two state_dicts hold the same keys and bit-identical tensors (NaNs compare by bit pattern)."""
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if not torch.equal(_bits(x), _bits(y)):
            return False
    return True


def state_digest(state: Mapping[str, Any]) -> str:
    """sha256 over a state_dict's keys, tensor dtypes, shapes and bits, and any extra state as sorted JSON: equal
    exactly when `state_equal` holds for the tensors and the extra states match."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(_bits(value).numpy().tobytes())
        else:
            digest.update(json.dumps(value, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
