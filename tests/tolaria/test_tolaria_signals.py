"""The heuristic's host signals: plateau counter and the stabilisation latch (tamiyo_simic.md §3.3–3.4)."""

from __future__ import annotations

from services.tolaria.signals import SignalTracker


def test_plateau_counts_small_gains_and_resets_on_progress() -> None:
    tracker = SignalTracker(plateau_threshold=0.5)
    counts = [tracker.update(acc, 1.0).plateau_epochs for acc in (50.0, 50.2, 50.4, 50.5, 52.0, 52.1)]
    assert counts == [0, 1, 2, 3, 0, 1]


def test_stabilisation_latches_after_three_quiet_epochs() -> None:
    tracker = SignalTracker()
    losses = [2.0, 1.0, 0.99, 0.98, 0.97, 3.0]
    latched = [tracker.update(50.0, loss).host_stabilized for loss in losses]
    # 1.0 is a 50% improvement (not quiet); 0.99, 0.98, 0.97 are quiet; the latch never unsets (the 3.0 spike).
    assert latched == [False, False, False, False, True, True]


def test_loss_delta_is_previous_minus_current() -> None:
    tracker = SignalTracker()
    tracker.update(10.0, 2.0)
    signals = tracker.update(12.0, 1.5)
    assert signals.loss_delta == 0.5 and signals.accuracy_delta == 2.0
