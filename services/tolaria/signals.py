"""Host-level training signals the heuristic reads: plateau counter and the stabilisation latch."""

from __future__ import annotations

import math
from dataclasses import dataclass

from leyline_schemas import TrainingSignals

STABILIZATION_EPOCHS = 3
STABLE_LOW = -0.05
STABLE_HIGH = 0.03


@dataclass
class SignalTracker:
    """reference/tamiyo_simic.md §3.3–3.4: plateau count and a latch that never unsets once the host is stable."""

    plateau_threshold: float = 0.5
    plateau_epochs: int = 0
    stable_count: int = 0
    host_stabilized: bool = False
    previous_accuracy: float | None = None
    previous_loss: float | None = None

    def update(self, val_accuracy: float, val_loss: float) -> TrainingSignals:
        accuracy_delta = 0.0 if self.previous_accuracy is None else val_accuracy - self.previous_accuracy
        # ARCHITECTURE.md §11: loss_delta = previous − current, positive means the loss fell.
        loss_delta = 0.0 if self.previous_loss is None else self.previous_loss - val_loss
        if self.previous_accuracy is not None:
            self.plateau_epochs = self.plateau_epochs + 1 if accuracy_delta < self.plateau_threshold else 0
        if self.previous_loss is not None and not self.host_stabilized:
            relative = (
                loss_delta / self.previous_loss if self.previous_loss > 0 and math.isfinite(loss_delta) else math.inf
            )
            self.stable_count = self.stable_count + 1 if STABLE_LOW < relative < STABLE_HIGH else 0
            if self.stable_count >= STABILIZATION_EPOCHS:
                self.host_stabilized = True
        self.previous_accuracy = val_accuracy
        self.previous_loss = val_loss
        return TrainingSignals(
            plateau_epochs=self.plateau_epochs,
            host_stabilized=self.host_stabilized,
            accuracy_delta=accuracy_delta,
            loss_delta=loss_delta if math.isfinite(loss_delta) else 0.0,
        )
